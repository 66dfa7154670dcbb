"""Calibration tasks on synthetic bias frames: ReadNoise, Bias (master bias), HotPixels."""
import json
import math
import statistics
import time

from awepipe import synthetic


def _clipped_stats(values, threshold, max_iter, log=None):
    """Mean and rms after iterative sigma clipping."""
    data = list(values)
    for iteration in range(max_iter):
        mean = statistics.fmean(data)
        rms = statistics.pstdev(data, mean)
        kept = [v for v in data if abs(v - mean) <= threshold * rms]
        if log:
            log(f"Iteration {iteration + 1}: mean {mean:8.3f} rms {rms:7.3f}, "
                f"{len(data) - len(kept)} pixels rejected")
        if len(kept) == len(data):
            break
        data = kept
    return statistics.fmean(data), statistics.pstdev(data)


def _frames(ctx, count):
    o = ctx.options
    frames = []
    ctx.log("Querying database for instances of class RawBiasFrame")
    for number in range(count):
        name = synthetic.frame_name(o["instrument"], o["chip"], o["date"], number)
        ctx.log(f"Using RawBiasFrame {name}")
        frames.append(synthetic.bias_frame(o["instrument"], o["chip"], o["date"], number))
    return frames


def read_noise(ctx):
    o = ctx.options
    pars = o["pars"] or {}
    max_iter = int(pars.get("max_iter", 5))
    threshold = float(pars.get("threshold", 5.0))
    first, second = _frames(ctx, 2)
    ctx.log("Making ReadNoise object")
    ctx.log("Computing difference...")
    diff = [a - b for a, b in zip(first, second, strict=True)]
    ctx.log(f"Difference between biases is : {statistics.fmean(diff):7.3f} (mean), "
            f"{statistics.median(diff):6.2f} (median)")
    ctx.log("Estimating rms iteratively...")
    ctx.log(f"Maximum number of iterations : {max_iter}")
    ctx.log(f"Rejection threshold : {threshold:6.1f} (sigma)")
    _, rms = _clipped_stats(diff, threshold, max_iter, ctx.log)
    noise = rms / math.sqrt(2.0)
    ctx.log(f"The read noise (ADU) for ccd {o['chip']} is : {noise:6.2f}")
    return [{"class": "ReadNoise", "instrument": o["instrument"], "chip": o["chip"],
             "date": o["date"], "read_noise": round(noise, 4)}]


def _slow_stack(ctx, frames, steps):
    """The median stack in `steps` steps of about a second each, the progress kept for a
    checkpoint: a preempted run resumes at the step it reached (ctx.resumed)."""
    columns = list(zip(*frames, strict=True))
    per = -(-len(columns) // steps)
    box = [getattr(ctx, "resumed", None) or {"step": 0, "stacked": []}]
    if box[0]["step"]:
        ctx.log(f"Resuming from checkpoint at step {box[0]['step']} of {steps}")
    if hasattr(ctx, "on_checkpoint"):
        ctx.on_checkpoint(lambda: box[0])  # one whole state: a step is never half saved
    while box[0]["step"] < steps:
        step = box[0]["step"]
        part = [statistics.median(c) for c in columns[step * per:(step + 1) * per]]
        time.sleep(1.0)
        box[0] = {"step": step + 1, "stacked": box[0]["stacked"] + part}
        if (step + 1) % 10 == 0:
            ctx.log(f"Stacked step {step + 1} of {steps}")
    return box[0]["stacked"]


def master_bias(ctx):
    o = ctx.options
    pars = o["pars"] or {}
    count = int(pars.get("frames", 5))
    steps = int(pars.get("steps", 0))  # pars={"steps": 120}: a slow stack, to try preemption
    frames = _frames(ctx, count)
    ctx.log(f"Median-stacking {count} bias frames" + (f" in {steps} steps" if steps > 0 else ""))
    if steps > 0:
        stacked = _slow_stack(ctx, frames, steps)
    else:
        stacked = [statistics.median(column) for column in zip(*frames, strict=True)]
    mean, rms = _clipped_stats(stacked, 5.0, 5)
    path = ctx.workdir / f"MasterBias_{o['instrument']}_{o['chip']}_{o['date']}.json"
    path.write_text(json.dumps(stacked))
    ctx.log(f"Master bias level {mean:8.2f} ADU, rms {rms:6.3f} ADU -> {path.name}")
    return [{"class": "BiasFrame", "instrument": o["instrument"], "chip": o["chip"],
             "date": o["date"], "level": round(mean, 3), "rms": round(rms, 4),
             "filename": path.name}]


def hot_pixels(ctx):
    o = ctx.options
    path = ctx.workdir / f"MasterBias_{o['instrument']}_{o['chip']}_{o['date']}.json"
    made = [d / path.name for d in getattr(ctx, "inputs", {}).get("Bias", [])]
    if made:  # dpu.run_target: the committed master bias of the Bias process for this CCD
        path = made[0]
        ctx.log(f"Using master bias {path.name} of {path.parent.parent.parent.parent.name} "
                f"process {path.parent.parent.name}")
        pixels = json.loads(path.read_text())
    elif path.exists():
        ctx.log(f"Using master bias {path.name} made earlier in this process")
        pixels = json.loads(path.read_text())
    else:
        ctx.log("No master bias in this process; stacking 3 bias frames")
        frames = _frames(ctx, 3)
        pixels = [statistics.median(column) for column in zip(*frames, strict=True)]
    mean, rms = _clipped_stats(pixels, 5.0, 5)
    threshold = float((o["pars"] or {}).get("threshold", 25.0))
    hot = [i for i, v in enumerate(pixels) if v > mean + threshold * rms]
    ctx.log(f"Found {len(hot)} hot pixels above {threshold} sigma")
    return [{"class": "HotPixelMap", "instrument": o["instrument"], "chip": o["chip"],
             "date": o["date"], "count": len(hot),
             "pixels": [[i % synthetic.SIZE, i // synthetic.SIZE] for i in hot]}]
