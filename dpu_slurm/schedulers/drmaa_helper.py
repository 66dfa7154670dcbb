"""The DRMAA helper process (``python -m dpu_slurm.schedulers.drmaa_helper``, started by
drmaa.Helper): one DRMAA session, JSON lines on stdin/stdout. Why a separate process: drmaa.py."""
from __future__ import annotations

import json
import os
import sys
from typing import IO, Any, Dict, List


def _reply(out: IO[str], **data: Any) -> None:
    out.write(json.dumps(data) + "\n")
    out.flush()


def _handle(drmaa: Any, session: Any, req: Dict[str, Any]) -> Dict[str, Any]:
    op = req["op"]
    if op == "submit":
        jt = session.createJobTemplate()
        try:
            jt.remoteCommand, jt.args, jt.jobName = req["command"], req["args"], req["name"]
            jt.nativeSpecification, jt.workingDirectory = req["native"], req["workdir"]
            jt.outputPath, jt.joinFiles = req["output"] + drmaa.JobTemplate.PARAMETRIC_INDEX + ".out", True
            try:
                ids = session.runBulkJobs(jt, 1, int(req["count"]), 1)
            except drmaa.errors.DrmCommunicationException as exc:
                return {"error": str(exc), "kind": "submit", "transient": True}
            except Exception as exc:  # DeniedByDrm, InvalidAttributeValue, ...
                return {"error": f"{type(exc).__name__}: {exc}", "kind": "submit"}
        finally:
            session.deleteJobTemplate(jt)
        return {"ids": list(ids)}
    if op == "control":
        action = {"terminate": drmaa.JobControlAction.TERMINATE}[req["action"]]
        for job_id in req["ids"]:
            try:
                session.control(job_id, action)
            except drmaa.errors.InvalidJobException:
                pass  # already gone
        return {"ok": True}
    if op == "status":
        states: Dict[str, str] = {}
        for job_id in req["ids"]:
            try:
                states[job_id] = str(session.jobStatus(job_id))
            except drmaa.errors.InvalidJobException:
                states[job_id] = "undetermined"
        return {"states": states}
    if op == "reap":  # finished jobs of this session, without waiting (no scheduler round trip)
        infos: List[Dict[str, Any]] = []
        for _ in range(100_000):
            try:
                info = session.wait(drmaa.Session.JOB_IDS_SESSION_ANY, drmaa.Session.TIMEOUT_NO_WAIT)
            except (drmaa.errors.ExitTimeoutException, drmaa.errors.InvalidJobException):
                break
            except Exception as exc:  # SGE: code 24 for a job deleted while queued
                if "code 24" not in str(exc):
                    break
                continue
            infos.append({k: getattr(info, k) for k in ("jobId", "hasExited", "exitStatus",
                                                         "hasSignal", "terminatedSignal", "wasAborted")})
        return {"infos": infos}
    return {"error": f"unknown operation {op!r}"}


def serve(inp: IO[str], out: IO[str]) -> int:
    """The helper's main loop: open a DRMAA session, answer JSON lines until EOF; 1 if none opens."""
    try:
        import drmaa
        session = drmaa.Session()
        session.initialize()
    except (RuntimeError, OSError, ImportError) as exc:
        _reply(out, error=f"cannot load libdrmaa ({os.environ.get('DRMAA_LIBRARY_PATH')}): {exc}",
               kind="config")
        return 1
    except Exception as exc:  # e.g. DrmCommunicationException: no qmaster
        _reply(out, error=f"cannot open a DRMAA session: {type(exc).__name__}: {exc}", kind="config")
        return 1
    _reply(out, ok=True, drms=str(session.drmsInfo), contact=str(session.contact))
    try:
        for line in inp:
            if line.strip():
                try:
                    _reply(out, **_handle(drmaa, session, json.loads(line)))
                except Exception as exc:  # report it, keep the session
                    _reply(out, error=f"{type(exc).__name__}: {exc}")
    finally:
        session.exit()
    return 0


if __name__ == "__main__":
    sys.exit(serve(sys.stdin, sys.stdout))
