"""The ``dpu`` command: the Processor's methods for the shell and for cron.

Exit codes: 0 ok; 1 a job or task failed; 2 usage or config error; 3 `dpu wait` timed out
before the jobs finished.
"""
from __future__ import annotations

import argparse
import json
import os
import sys
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Union

from . import __version__, bulk, shell
from .config import DPUConfig, config_files, discover, load_file
from .errors import ConfigError, DPUError
from .estimates import AUTO
from .processor import Processor
from .session import JobView
from .states import STATUS_TERMINAL, JobStatus
from .web import commands as web_commands

OK, FAILED, USAGE, TIMEOUT = 0, 1, 2, 3


def _options(pairs: Sequence[str]) -> Dict[str, str]:
    out: Dict[str, str] = {}
    for pair in pairs:
        key, sep, value = pair.partition("=")
        if not sep or not key:
            raise DPUError(f"option {pair!r} is not KEY=VALUE (e.g. i=WFI d=2000-04-28)")
        if key in out:
            raise DPUError(f"option {key!r} is given twice ({out[key]!r} and {value!r}); give it once")
        out[key] = value
    return out


def _view(v: JobView) -> Dict[str, Any]:
    return {"jobid": v.job.id, "dpu": v.job.dpu, "sequence": v.job.sequence, "status": v.status,
            "counters": dict(zip("NEASU", v.counts.letters, strict=True)), "processes": v.job.nproc,
            "ok": v.ok, "error": v.job.error or None, "after": v.job.dpu_options.get("after")}


def _failed(views: List[JobView]) -> bool:
    return any(v.status == JobStatus.NOT_SUBMITTED or (v.status == JobStatus.FINISHED and not v.ok)
               for v in views)


def parser() -> argparse.ArgumentParser:
    """The ``dpu`` command's argument parser with all its subcommands."""
    p = argparse.ArgumentParser(prog="dpu", description="Run AWEPIPE task sequences on a "
                                "Distributed Processing Unit (SLURM, PBS, Grid Engine or this machine).",
                                epilog="Exit codes: 0 ok, 1 a job or task failed, 2 usage or config error, "
                                "3 dpu wait timed out.")
    p.add_argument("--version", action="version", version=f"dpu_slurm {__version__}")
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument("--dpu", help="DPU name (default: DPU_NAME or your saved choice)")
    common.add_argument("--json", action="store_true", help="machine-readable output on stdout")
    sub = p.add_subparsers(dest="command", metavar="COMMAND", required=True)

    r = sub.add_parser("run", parents=[common], help="submit a sequence as one job")
    r.add_argument("sequence", help="e.g. ReadNoise or Bias>HotPixels (quote the >)")
    r.add_argument("options", nargs="*", metavar="KEY=VALUE", help="task options, short or long names")
    r.add_argument("--time", type=_amount, dest="dpu_time",
                   help="expected seconds per process, or 'auto': learned from past runs")
    r.add_argument("--mem", type=_amount, dest="dpu_mem", help="MB per process, or 'auto'")
    r.add_argument("--aweversion", dest="dpu_aweversion", help="installed version on the DPU")
    r.add_argument("--no-send-code", dest="send_code", action="store_false",
                   help="use the DPU's installed code instead of shipping yours")
    r.add_argument("--retries", type=int, dest="max", metavar="N",
                   help="resubmit failed processes up to N times (README 'Retries')")
    r.add_argument("--retry-on", dest="on", metavar="LETTERS", help="which outcomes (default AU)")
    r.add_argument("--grow-time", type=float, dest="grow_time", metavar="F", help="time x F each retry")
    r.add_argument("--grow-mem", type=float, dest="grow_mem", metavar="F", help="memory x F each retry")
    r.add_argument("--after", metavar="ID[,ID]", help="start after these jobs (README 'Pipelines of jobs')")
    r.add_argument("--after-mode", dest="after_mode", choices=("ok", "any", "each"), default="ok",
                   help="ok: after they end N; any: after they end; each: process i after process i")
    r.add_argument("--wait", action="store_true", help="wait until the job finishes")
    r.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")

    t = sub.add_parser("target", parents=[common], help="run a task and the tasks it requires, "
                       "skipping committed processes (README 'Pipelines of jobs')")
    t.add_argument("task", help="e.g. HotPixels")
    t.add_argument("options", nargs="*", metavar="KEY=VALUE", help="task options, short or long names")
    t.add_argument("--force", action="store_true", help="run every process again, committed or not")
    t.add_argument("--dry-run", action="store_true", help="say what would run, submit nothing")
    t.add_argument("--wait", action="store_true", help="wait until the jobs finish")
    t.add_argument("--timeout", type=float, help="with --wait: give up after this many seconds")

    for name, text in (("status", "status and N/E/A/S/U counters"), ("logs", "the jobs' log lines")):
        s = sub.add_parser(name, parents=[common], help=text)
        s.add_argument("jobids", nargs="*", type=int, help="default: active and recent jobs"
                       if name == "status" else "default: all your jobs on the DPU")
        if name == "logs":
            s.add_argument("--recent", action="store_true",
                           help="without ids: only active jobs and those ended in the last 24 h")
        if name == "status":
            s.add_argument("--attempts", action="store_true", help="also each rerun process's attempts")
    rr = sub.add_parser("rerun", parents=[common], help="resubmit the failed processes of a finished job")
    rr.add_argument("jobid", type=int)
    rr.add_argument("--only", default="EAU", help="rerun processes with a task ending in one of these "
                    "letters (default EAU)")
    rr.add_argument("--more-time", type=float, dest="time_factor", metavar="F",
                    help="multiply the time limit")
    rr.add_argument("--more-mem", type=float, dest="mem_factor", metavar="F", help="multiply the memory")
    rr.add_argument("--auto", action="store_true", help="double the time of processes that timed out, "
                    "the memory of those out of memory (up to the DPU's largest partition)")
    rep = sub.add_parser("report", parents=[common], help="time, memory and CPU used against asked")
    rep.add_argument("jobid", type=int)
    w = sub.add_parser("wait", parents=[common], help="wait until jobs finish (for scripts)")
    w.add_argument("jobids", nargs="+", type=int)
    w.add_argument("--timeout", type=float)
    sub.add_parser("jobids", parents=[common], help="your job identifiers on the DPU")
    res = sub.add_parser("result", parents=[common], help="committed results of a job")
    res.add_argument("jobid", type=int)
    c = sub.add_parser("cancel", parents=[common], help="cancel a job that is not yet running")
    c.add_argument("jobids", nargs="+", type=int)
    c.add_argument("--force", action="store_true", help="also kill running processes (they end A)")
    sub.add_parser("sequences", parents=[common], help="the task sequences the DPU recognises")
    o = sub.add_parser("options", parents=[common], help="the options of a sequence")
    o.add_argument("sequence")
    o.add_argument("-v", "--verbose", action="store_true", help="also each option's help text")
    sub.add_parser("dpus", parents=[common], help="the known DPUs")
    sel = sub.add_parser("select", parents=[common], help="save a DPU as your default")
    sel.add_argument("name")
    cfg = sub.add_parser("config", help="cluster config tools")
    cfg_sub = cfg.add_subparsers(dest="config_command", required=True, metavar="check")
    chk = cfg_sub.add_parser("check", parents=[common], help="validate DPU YAML files and render a "
                             "trial job script for each (no submission, no connection)")
    chk.add_argument("files", nargs="*", help="default: every DPU file on the search path")
    sub.add_parser("shell", parents=[common], help="a Python prompt with `dpu` ready")
    cl = sub.add_parser("cleanup", parents=[common],
                        help="remove code bundles on the DPU that no active job uses")
    cl.add_argument("--days", type=float, default=7.0,
                    help="keep bundles used within this many days (default 7)")
    b = sub.add_parser("bulk", parents=[common], help="submit every run of a manifest once (for cron)",
                       description="Submit the runs of a YAML manifest, each once: reruns skip the "
                                   "entries already submitted.", epilog=bulk.EXIT_CODES)
    b.add_argument("manifest", help="the YAML manifest (format: the README's 'dpu bulk' section)")
    b.add_argument("--dry-run", action="store_true", help="validate and render, submit nothing")
    b.add_argument("--strict", action="store_true", help="submit nothing if any entry is bad")
    b.add_argument("--max-queued", type=int, help="overrides the manifest's max_queued")
    b.add_argument("--lock-timeout", type=float, default=3600.0,
                   help="seconds to wait for an overlapping run (default 3600)")
    b.add_argument("--forget", action="append", default=[], metavar="KEY",
                   help="forget that KEY was submitted, so this run submits it again")
    b.add_argument("-v", "--verbose", action="store_true", help="also list skipped and deferred entries")
    web_commands.add_parsers(sub, common)   # web, queue, token
    return p


def main(argv: Optional[Sequence[str]] = None) -> int:
    """Run the ``dpu`` command; return its exit status (a DPUError is printed, not raised)."""
    args = parser().parse_args(argv)
    try:
        return _dispatch(args)
    except DPUError as exc:
        if getattr(args, "json", False):
            print(json.dumps({"error": str(exc), "type": type(exc).__name__}))
        print(f"dpu: error: {exc}", file=sys.stderr)
        return exc.exit_code
    except KeyboardInterrupt:
        print("dpu: interrupted", file=sys.stderr)
        return 130


def _dispatch(args: argparse.Namespace) -> int:
    if args.command == "config":
        return _config_check(args.files, args.json)
    if args.command == "bulk":
        return bulk.run(args)
    if args.command in ("web", "queue", "token"):
        return {"web": web_commands.serve, "queue": web_commands.queue,
                "token": web_commands.token}[args.command](args)
    out = sys.stderr if args.json else sys.stdout
    # The prompt keeps its YYYYmmdd_HHMMSS.log like an AWE session; one-shot commands do not.
    auto = args.command == "run" and args.dpu == "auto"   # routing.py picks the DPU per run
    dpu = Processor(None if auto else args.dpu, out=out, session_log=args.command == "shell")
    try:
        return _command(dpu, args)
    finally:
        dpu.close()


def _amount(text: str) -> Union[float, str]:
    """--time/--mem: a number, or 'auto' (estimates.py)."""
    if text == AUTO:
        return text
    try:
        return float(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"a number or '{AUTO}', not {text!r}") from None


def _emit(args: argparse.Namespace, data: Any) -> None:
    if args.json:
        print(json.dumps(data, indent=1))


def _command(dpu: Processor, args: argparse.Namespace) -> int:
    cmd = args.command
    if cmd == "run":
        policy = {k: getattr(args, k) for k in ("max", "on", "grow_time", "grow_mem")
                  if getattr(args, k) is not None}
        job_id = dpu.run(args.sequence, dpu_time=args.dpu_time, dpu_mem=args.dpu_mem,
                         dpu_aweversion=args.dpu_aweversion, send_code=args.send_code,
                         return_jobid=True, retries=policy or None, after=args.after,
                         after_mode=args.after_mode, dpu="auto" if args.dpu == "auto" else None,
                         return_job=False, **_options(args.options))
        assert isinstance(job_id, int)
        if not args.wait:
            _emit(args, {"jobid": job_id})
            return OK
        views = dpu.wait(job_id, timeout=args.timeout)
        views = dpu.get_status(job_id)
        _emit(args, [_view(v) for v in views])
        return OK if all(v.ok for v in views) else FAILED
    if cmd == "target":
        jobs = dpu.run_target(args.task, force=args.force, dry_run=args.dry_run, **_options(args.options))
        ids = [j for j in jobs.values() if j is not None]
        if not (args.wait and ids):
            _emit(args, jobs)
            return OK
        dpu.wait(ids, timeout=args.timeout)
        views = dpu.get_status(ids)
        _emit(args, [_view(v) for v in views])
        return OK if all(v.ok for v in views) else FAILED
    if cmd in ("status", "wait"):
        if cmd == "wait":
            views = dpu.wait(args.jobids, timeout=args.timeout)
        views = dpu.get_status(args.jobids or None)
        for view in views if getattr(args, "attempts", False) else []:
            dpu.show_attempts(view.job.id)
        _emit(args, [_view(v) for v in views])
        if cmd == "wait" and not all(v.status in STATUS_TERMINAL for v in views):
            return TIMEOUT
        return FAILED if _failed(views) else OK
    if cmd == "rerun":
        indices = dpu.rerun(args.jobid, args.only, args.time_factor, args.mem_factor, args.auto)
        _emit(args, {"jobid": args.jobid, "indices": indices})
        return OK
    if cmd == "report":
        _emit(args, dpu.report(args.jobid))
        return OK
    if cmd == "jobids":
        ids = dpu.get_jobids()
        _emit(args, ids) if args.json else print(" ".join(map(str, ids)))
        return OK
    if cmd == "logs":
        lines = dpu.get_logs(args.jobids or None, recent=args.recent)
        _emit(args, lines)
        return OK
    if cmd == "result":
        objects = dpu.get_job_result(args.jobid)
        _emit(args, objects) if args.json else print(json.dumps(objects, indent=1))
        return OK if objects else FAILED
    if cmd == "cancel":
        outcomes = {jid: dpu.cancel(jid, force=args.force) for jid in args.jobids}
        left = [jid for jid, o in outcomes.items() if o.running or o.unsettled]
        _emit(args, {"cancelled": [j for j in args.jobids if j not in left], "left": left})
        for jid in left:
            what = ("still being submitted; try again after poll.grace" if outcomes[jid].unsettled
                    else f"{outcomes[jid].running} process(es) still running; add --force to kill them")
            print(f"dpu: job {jid}: {what}", file=sys.stderr)
        return USAGE if left else OK
    if cmd == "sequences":
        idents = dpu.get_sequence_identifiers()
        _emit(args, idents) if args.json else dpu.show_sequence_identifiers()
        return OK
    if cmd == "options":
        _emit(args, dpu.get_sequence_options(args.sequence)) if args.json else \
            dpu.show_sequence_options(args.sequence, args.verbose)
        return OK
    if cmd == "dpus":
        if not args.json:
            dpu.show_dpu_identifiers()
            return OK
        found = discover()[0]
        _emit(args, [{"name": name, "scheduler": found[name].scheduler, "submit": found[name].submit,
                      "host": (found[name].host or {}).get("hostname"),
                      "description": found[name].description, "current": name == dpu.dpu_name}
                     for name in sorted(found)])
        return OK
    if cmd == "select":
        name = dpu.select_dpu(args.name, persist=True)
        _emit(args, {"dpu": name})
        return OK
    if cmd == "cleanup":
        removed = dpu.cleanup(args.days)
        _emit(args, {"removed": removed}) if args.json else print(
            f"removed {len(removed)} unused code bundle(s) from DPU {dpu.dpu_name}")
        return OK
    if cmd == "shell":
        shell.interact(dpu)
        return OK
    raise DPUError(f"unknown command {cmd!r}")  # pragma: no cover - argparse refuses it first


def _config_check(files: Sequence[str], as_json: bool) -> int:
    """Validate DPU files (default: every file on the search path) and render a trial job script
    for each good one, so what passes can be submitted."""
    from .trial import render

    paths = [Path(f) for f in files] or config_files()
    status = OK
    report = []
    for path in paths:
        try:
            cfg = load_file(path)
            problems = _index_problems(cfg) + _workdir_problems(cfg)
            if problems:
                raise ConfigError("\n".join(f"{path}: {p}" for p in problems))
            scripts = render(cfg)
            report.append({"file": str(path), "ok": True, "dpu": cfg.name, "rendered": sorted(scripts)})
            if not as_json:
                print(f"{path}: ok (DPU {cfg.name}, scheduler {cfg.scheduler}); trial job script "
                      f"rendered: {', '.join(sorted(scripts))}")
        except DPUError as exc:
            status = USAGE
            report.append({"file": str(path), "ok": False, "error": str(exc)})
            if not as_json:
                print(str(exc), file=sys.stderr)
    if as_json:
        print(json.dumps(report, indent=1))
    return status


def _workdir_problems(cfg: DPUConfig) -> List[str]:
    """An existing workdir on this machine that a submit would refuse (transport/folders.py)."""
    if cfg.is_remote:
        return []   # checked on the DPU at the first submit
    from .transport.folders import workdir_problem

    path = os.path.expanduser(cfg.target_workdir())
    try:
        why = workdir_problem(path) if os.path.isdir(path) else None
    except OSError as exc:
        why = f"the workdir {path} cannot be checked: {exc.strerror}"
    return [why] if why else []


def _index_problems(cfg: DPUConfig) -> List[str]:
    """A shared job index on this machine whose folder others cannot use (see index.py)."""
    if not cfg.job_index or cfg.is_remote or "{dpu_home}" in cfg.job_index:
        return []   # the default or a per-user index is private; a remote one is checked there
    from .index import index_dir
    from .transport.folders import index_root_problems
    from .transport.local import LocalTransport

    root = index_dir(cfg, LocalTransport())
    return [f"job_index {root} {p}" for p in index_root_problems(root)]


if __name__ == "__main__":
    sys.exit(main())
