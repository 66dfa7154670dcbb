"""The Null task: exercises the DPU without any data."""
import os
import time


def null(ctx):
    opts = ctx.options
    if opts["message"]:
        ctx.log(f"Message: {opts['message']}")
    # Filled, not just reserved: untouched zero pages would not count as resident memory.
    ballast = bytearray(b"\x01") * (opts["allocate"] * 1024 * 1024) if opts["allocate"] else b""
    if opts["sleep"]:
        ctx.log(f"Sleeping {opts['sleep']} s")
        time.sleep(opts["sleep"])
    if opts.get("slow_first") == "yes" and not os.environ.get("DPU_RERUN"):
        ctx.log("Sleeping 150 s on the first attempt (slow_first)")
        time.sleep(150)
    if opts["fail_first"] == "yes" and not os.environ.get("DPU_RERUN"):
        raise RuntimeError(f"Null task: process {ctx.index} fails on its first attempt (fail_first)")
    if opts["fail"]:
        raise RuntimeError("Null task asked to fail (fail=True)")
    if opts.get("fail_odd") and ctx.index % 2 == 1:
        raise RuntimeError(f"Null task: process {ctx.index} is odd and fail_odd is set")
    ctx.log(f"Null done (process {ctx.index}, {len(ballast)} bytes held)")
    return [{"class": "Null", "process": ctx.index, "message": opts["message"]}]
