"""DomeFlat (a master dome flat per CCD and filter) and Reduce (science frames de-biased and
flat-fielded), on the synthetic archive (archive.py)."""
import json
import statistics

from awepipe import archive, synthetic


def _name(*parts):
    return "_".join(str(p).lstrip("#") for p in parts)


def _bias(ctx):
    o = ctx.options
    level, _, _ = synthetic.ccd_properties(o["instrument"], o["chip"])
    ctx.log(f"Using BiasFrame of {o['chip']}: level {level:8.2f} ADU")
    return level


def dome_flat(ctx):
    """Median of the night's dome flats of one CCD, each de-biased and scaled to median 1."""
    o = ctx.options
    count = int((o["pars"] or {}).get("frames", 3))
    bias = _bias(ctx)
    ctx.log("Querying database for instances of class RawDomeFlatFrame")
    scaled = []
    for number in range(count):
        name = archive.frame_name(o["instrument"], o["chip"], o["filter"], o["date"], f"DF{number}")
        raw = archive.dome_flat_frame(o["instrument"], o["chip"], o["filter"], o["date"], number)
        level = statistics.median(raw) - bias
        ctx.log(f"Using RawDomeFlatFrame {name} (median {level:9.1f} ADU above bias)")
        scaled.append([(v - bias) / level for v in raw])
    ctx.log(f"Median-stacking {count} normalised dome flats")
    flat = [statistics.median(column) for column in zip(*scaled, strict=True)]
    rms = statistics.pstdev(flat)
    path = ctx.workdir / f"{_name('DomeFlat', o['instrument'], o['chip'], o['filter'], o['date'])}.json"
    path.write_text(json.dumps([round(v, 5) for v in flat]))
    ctx.log(f"Dome flat of {o['chip']} in filter {o['filter']}: rms {rms:6.4f} -> {path.name}")
    return [{"class": "DomeFlatFrame", "instrument": o["instrument"], "chip": o["chip"],
             "filter": o["filter"], "date": o["date"], "frames": count, "rms": round(rms, 5),
             "filename": path.name}]


def reduce(ctx):
    """Each science frame of the fields asked for, on one CCD: bias off, divided by the flat;
    its sky level and the number of sources above 5 sigma."""
    o = ctx.options
    bias = _bias(ctx)
    flat = archive.response(o["instrument"], o["chip"], o["filter"])
    ctx.log(f"Using DomeFlatFrame of {o['chip']} in filter {o['filter']}")
    out = []
    for field in archive.check_fields(o["object"]):
        name = archive.frame_name(o["instrument"], o["chip"], o["filter"], o["date"], field)
        ctx.log(f"Reducing RawScienceFrame {name}")
        raw = archive.science_frame(o["instrument"], o["chip"], o["filter"], o["date"], field)
        pixels = [(v - bias) / f for v, f in zip(raw, flat, strict=True)]
        sky = statistics.median(pixels)
        rms = statistics.median(abs(v - sky) for v in pixels) * 1.4826
        sources = sum(1 for v in pixels if v > sky + 5 * rms)
        path = ctx.workdir / f"{_name('Sci', field, o['chip'], o['filter'], o['date'])}.json"
        path.write_text(json.dumps({"sky": sky, "rms": rms, "sources": sources}))
        ctx.log(f"{field}: sky {sky:8.1f} ADU, rms {rms:6.2f} ADU, {sources} sources -> {path.name}")
        out.append({"class": "ReducedScienceFrame", "object": field, "instrument": o["instrument"],
                    "chip": o["chip"], "filter": o["filter"], "date": o["date"],
                    "sky": round(sky, 2), "sources": sources, "filename": path.name})
    return out
