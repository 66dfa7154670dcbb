"""``dpu shell``: the AWE prompt, with the HOW-TO's banner, ``awe>`` and ``dpu``/``Env`` ready."""
from __future__ import annotations

import ast
import code
import sys
from typing import Any, Dict, List, Optional

from .config import dpu_home, get_dpu
from .errors import DPUError
from .processor import Processor
from .text import printable

PROMPT = "awe> "
WELCOME = "               Welcome to the Astro-WISE Environment"
HINT_CHARS = 2000   # a longer line is no HOW-TO line: no hint (and no parse of it)


def banner(dpu: Processor) -> List[str]:
    """The start-up lines of the HOW-TO's AWE session, with this project's profile: the user,
    the job store, the DPU and the pipeline code in use."""
    lines = [f"Python {sys.version} on {sys.platform}", "",
             'Type "help", "copyright", "credits" or "license" for more information.', "",
             WELCOME, "", "Importing Astro-WISE packages. Please wait..."]
    try:  # the AWEPIPE task declarations: this project's "packages"
        pipeline = f"{dpu.catalog.source} ({len(dpu.catalog.sequences)} sequences)"
    except DPUError as exc:  # the prompt still starts, so the user can fix AWEPIPE and retry
        pipeline = f"not loaded: {exc}"
    cfg = get_dpu(dpu.dpu_name)
    where = cfg.host["hostname"] if cfg.host else "this machine"
    lines += ["", "Initializing Distributed Processing Unit...", "", "Current profile:",
              f"- username : {dpu.user}",
              f"- DPU      : {dpu.dpu_name} ({cfg.scheduler}, {where})",
              f"- store    : {dpu_home() / 'jobs.sqlite'}",
              f"- AWEPIPE  : {pipeline}", ""]
    return lines


def interact(dpu: Processor) -> None:
    """Run the prompt until end of input; `dpu` and `Env` are in its namespace."""
    print("\n".join(banner(dpu)))
    old = getattr(sys, "ps1", None), getattr(sys, "ps2", None)
    sys.ps1, sys.ps2 = PROMPT, "...  "
    namespace: Dict[str, Any] = {"dpu": dpu, "Env": dpu.environment(), "__name__": "__console__"}
    try:
        Console(namespace).interact(banner="", exitmsg="")
    finally:
        for name, value in zip(("ps1", "ps2"), old, strict=True):
            if value is None:
                delattr(sys, name)
            else:
                setattr(sys, name, value)


def run_hint(source: str) -> Optional[str]:
    """What a user meant by a HOW-TO line pasted as it stands there, as a hint: a run line that
    lost its ``dpu.run(`` (``'DomeFlat', i='WFI')``), or a line with the ``awe>`` prompt in it;
    None for any other syntax error. The line is only parsed, never run; a line the parser
    cannot take (nested too deep, a lone surrogate, a literal too long to print) gets none."""
    if len(source) > HINT_CHARS:
        return None
    try:
        hint = _hint(source)
    except (SyntaxError, ValueError, OverflowError, RecursionError, MemoryError):
        return None
    return printable(hint) if hint else None


def _hint(source: str) -> Optional[str]:
    text = source.strip()
    prompt = text.startswith("awe>")
    text = text[4:].strip() if prompt else text
    if "\n" in text or not text:
        return None
    if text.startswith(("'", '"')):
        try:
            call = ast.parse("dpu.run(" + text, mode="eval").body
        except SyntaxError:
            return None
        if isinstance(call, ast.Call) and call.args and isinstance(call.args[0], ast.Constant) \
                and isinstance(call.args[0].value, str):
            # unparsed: without the trailing comment, as it would be typed
            return f"did you mean {ast.unparse(call)}? (the HOW-TO's run lines lost their 'dpu.run(')"
        return None
    try:
        compile(text, "<input>", "single")
    except SyntaxError:
        return None
    return f"did you mean {text}? (type the line without the awe> prompt)" if prompt else None


class Console(code.InteractiveConsole):
    """The prompt: a DPUError (a bad option, an unknown job...) is one line saying what to do,
    as in the seed's session, not a traceback; a HOW-TO run line pasted without its
    ``dpu.run(`` gets the line it meant."""

    source = ""

    def runsource(self, source: str, filename: str = "<input>", symbol: str = "single") -> bool:
        """Compile and run one input, remembering its text for showsyntaxerror."""
        self.source = source
        try:
            return super().runsource(source, filename, symbol)
        except (RecursionError, MemoryError):   # from the compiler: the prompt stays
            self.write("SyntaxError: this input is nested too deeply for Python to compile\n")
            return False

    def showsyntaxerror(self, filename: Optional[str] = None, **kwargs: Any) -> None:
        """The usual SyntaxError, then the run line meant when it is a HOW-TO run line."""
        super().showsyntaxerror(filename, **kwargs)
        hint = run_hint(self.source)
        if hint:
            self.write(hint + "\n")

    def showtraceback(self) -> None:
        """One line for a DPUError, the usual traceback for anything else (and the hint for a
        line typed with the ``awe>`` prompt in it)."""
        exc = sys.exc_info()[1]
        if isinstance(exc, DPUError):
            self.write(f"{type(exc).__name__}: {exc}\n")
            return
        super().showtraceback()
        hint = run_hint(self.source) if isinstance(exc, NameError) else None
        if hint and getattr(exc, "name", None) == "awe":  # `awe> dpu.x()` parses as a comparison
            self.write(hint + "\n")


__all__ = ["Console", "PROMPT", "banner", "interact", "run_hint"]
