"""POST /api/run: the seed's "submit your own jobs ... by using a webservice".

``Authorization: Bearer <token>`` (from ``dpu token create``) and a JSON body::

    {"sequence": "ReadNoise", "options": {"i": "WFI", "d": "2000-04-28"},
     "dpu_options": {"dpu_time": 60, "dpu_mem": 500, "dpu_aweversion": "master", "send_code": true}}

Answers 201 ``{"jobid": N, ...}``; 401 for a missing or wrong token (nothing is read further);
400 with the prompt's own message for a bad sequence or option; 502/503 when the scheduler
refuses or cannot be reached. The job is submitted as the user running ``dpu web``, into their
store, so it shows in their ``dpu.get_jobids()``.
"""
from __future__ import annotations

import json
import logging
import threading
from pathlib import Path
from typing import Any, Callable, Dict, Optional, Tuple

from .. import tokens
from ..catalog import Catalog
from ..errors import DPUError, SubmitError, Unreachable
from ..plan import make_plan
from ..run_request import DPU_OPTIONS, check_dpu_options, check_run
from ..schema import MAX_DEPTH, At
from ..session import DPUSession, awepipe_path, store_id
from ..store import Store
from ..text import printable
from .rows import job_url

log = logging.getLogger(__name__)

MAX_BODY = 1 << 20
FIELDS = ("sequence", "options", "dpu_options", "dpu")
Answer = Tuple[int, Dict[str, Any]]


class BadRequest(Exception):
    """A request the API refuses before anything is submitted."""

    def __init__(self, status: int, message: str) -> None:
        super().__init__(message)
        self.status = status


class RunAPI:
    """Checks tokens and submits; called in worker threads, never holding the page's state.

    Submits run one at a time (the session's store connection and transport are not shared
    between threads); token checks use their own store connection, so a wrong token is answered
    while a slow submit runs. After a submit the page is asked to refresh, not made to wait.
    """

    def __init__(self, session: DPUSession, token_store: Store,
                 on_submit: Callable[[], None] = lambda: None, awepipe: Optional[Path] = None,
                 base: str = "") -> None:
        self.session = session
        self.base = base           # the job pages' prefix: "" or /dpu/NAME
        self.token_store = token_store
        self.on_submit = on_submit
        self.awepipe = awepipe
        self._catalog: Optional[Catalog] = None
        self._token_lock = threading.Lock()
        self._submit_lock = threading.Lock()

    def code(self) -> Tuple[Catalog, Path]:
        """The pipeline's task declarations and its checkout (shipped with each job)."""
        if self._catalog is None:
            self.awepipe = self.awepipe or awepipe_path()
            self._catalog = Catalog.load(self.awepipe)
        return self._catalog, self.awepipe or awepipe_path()

    def check_token(self, authorization: str) -> Optional[tokens.TokenInfo]:
        """The token's record when the Authorization header carries a valid one of our user."""
        scheme, _, token = (authorization or "").partition(" ")
        if scheme.lower() != "bearer":
            return None
        with self._token_lock:
            info = tokens.verify(self.token_store, token.strip())
        return info if info is not None and info.user == self.session.user else None

    def handle(self, authorization: str, body: bytes) -> Answer:
        """The Authorization header and the body; the token is checked before the body is parsed."""
        info = self.check_token(authorization)
        if info is None:
            return 401, {"error": "missing or wrong token: send 'Authorization: Bearer TOKEN' with a "
                                  "token from `dpu token create` (run by the user this server runs as)"}
        try:
            sequence, options, dpu_options = parse(body, self.session.dpu.name)
            with self._submit_lock:
                catalog, awepipe = self.code()
                try:
                    plan = make_plan(catalog, self.session.dpu, sequence, options, **dpu_options)
                except (TypeError, ValueError, OverflowError, RecursionError) as exc:
                    # whatever JSON can carry that the prompt's checks did not foresee
                    raise BadRequest(400, f"cannot use these options ({type(exc).__name__}: {exc}); "
                                          "option values are strings, numbers or true/false") from None
                job_id = self.session.submit(plan, awepipe)
                store = store_id(self.session.store)
        except BadRequest as exc:
            return exc.status, {"error": str(exc)}
        except (SubmitError, Unreachable) as exc:
            transient = isinstance(exc, Unreachable) or getattr(exc, "transient", False)
            return (503 if transient else 502), {"error": str(exc), "type": type(exc).__name__}
        except DPUError as exc:  # the prompt's own messages: unknown sequence, bad option, ...
            return 400, {"error": str(exc), "type": type(exc).__name__}
        log.info("[%s] token %s: job %s (%s, %d processes) sent to DPU %s", printable(info.user),
                 info.id, job_id, printable(plan.sequence), plan.nproc, self.session.dpu.name)
        self.on_submit()
        return 201, {"jobid": job_id, "dpu": self.session.dpu.name, "user": info.user,
                     "sequence": plan.sequence, "processes": plan.nproc,
                     "url": self.base + job_url(f"{info.user}/{job_id}.{store}")}


def _no_constant(name: str) -> Any:
    raise ValueError(f"{name} is not a number JSON allows; numbers must be finite")


def parse(body: bytes, dpu: str) -> Tuple[str, Dict[str, Any], Dict[str, Any]]:
    """(sequence, options, dpu options) of a request body, or BadRequest saying what is wrong.
    The body is checked by the model manifest entries use (run_request.RunRequest)."""
    try:
        data = json.loads(body.decode("utf-8"), parse_constant=_no_constant)
    except (UnicodeDecodeError, ValueError) as exc:
        raise BadRequest(400, f"the body is not JSON ({exc}); send e.g. "
                              '{"sequence": "Null", "options": {"m": "hello"}}') from None
    except RecursionError:
        raise BadRequest(400, f"the body is nested too deeply; option values nest at most "
                              f"{MAX_DEPTH} deep") from None
    if not isinstance(data, dict):
        raise BadRequest(400, "the body must be a JSON object with 'sequence' and 'options'")
    unknown = sorted(set(data) - set(FIELDS))
    if unknown:
        raise BadRequest(400, f"unknown field(s) {', '.join(unknown)}; allowed: {', '.join(FIELDS)}")
    if data.get("dpu") not in (None, dpu):
        raise BadRequest(400, f"this server submits to DPU {dpu!r}, not {data['dpu']!r}; "
                              "use the dpu web of that DPU")
    sequence = data.get("sequence")
    if not isinstance(sequence, str) or not sequence:
        raise BadRequest(400, "'sequence' is required: a sequence identifier like 'ReadNoise'")
    options = data.get("options", {})
    dpu_options = data.get("dpu_options", {})
    for name, value in (("options", options), ("dpu_options", dpu_options)):
        if not isinstance(value, dict):
            raise BadRequest(400, f"'{name}' must be a JSON object, not {type(value).__name__}")
    bad = sorted(set(dpu_options) - set(DPU_OPTIONS))
    if bad:
        raise BadRequest(400, f"unknown dpu option(s) {', '.join(bad)}; allowed: {', '.join(DPU_OPTIONS)}")
    try:
        run = check_run(data, At(key=""))
        asked = check_dpu_options(dpu_options, At(key="dpu_options"))
    except DPUError as exc:  # the prompt's words: non-finite numbers, surrogates, depth, sizes
        raise BadRequest(400, str(exc)) from None
    return run["sequence"], run["options"], asked
