"""Task declarations of the example pipeline: what the DPU client reads.

Nothing here imports the task code; ``run`` names the function the job imports.
"""
from awepipe import archive
from awepipe.instruments import INSTRUMENTS

from dpu_slurm.catalog import Option, Task
from dpu_slurm.processes import Processes

INSTRUMENT = Option("i", "instrument", str, "", "instrument name: " + ", ".join(INSTRUMENTS))
CHIP = Option("c", "chip", str, "", "one CCD; all CCDs of the instrument when empty")
DATE = Option("d", "date", str, "", "night of the observations, YYYY-MM-DD")
TEMPLATE = Option("tpl", "template", str, None, "template name")
PARS = Option("p", "pars", dict, {}, "process parameters, e.g. {'max_iter': 5}")
COMMIT = Option("C", "commit", bool, False, "commit the results so get_job_result returns them")
CALIB = (INSTRUMENT, CHIP, DATE, TEMPLATE, PARS, COMMIT)


def per_ccd(options):
    """One process per CCD of the instrument, or one for the CCD asked for."""
    name = options["instrument"]
    if name not in INSTRUMENTS:
        raise ValueError(f"unknown instrument {name!r}; known: {', '.join(INSTRUMENTS)} "
                         "(give it with i=...)")
    ccds = INSTRUMENTS[name]
    if options["chip"]:
        if options["chip"] not in ccds:
            raise ValueError(f"{name} has no CCD {options['chip']!r}; its CCDs: {', '.join(ccds)}")
        return [{}]
    return [{"chip": ccd} for ccd in ccds]


FILTER = Option("f", "filter", str, "", "filter name, e.g. '#842'; WFI: " + ", ".join(archive.FILTERS["WFI"]))
OBJECT = Option("o", "object", str, "", "field name, a pattern: ? is one character, e.g. 'CDF4_B_?'")


def per_ccd_at_night(options):
    """per_ccd, after checking the filter and the night (DomeFlat, Reduce)."""
    processes = per_ccd(options)
    archive.check_night(options)
    return processes


def per_ccd_of_fields(options):
    """per_ccd_at_night, after checking that the field pattern names observed fields (Reduce)."""
    archive.check_fields(options["object"])
    return per_ccd_at_night(options)


FIRST = {"fail_first": "", "slow_first": ""}


def _first_attempt(options):
    """Index -> its first-attempt marks (fail_first, slow_first) for the processes named."""
    out = {}
    for name in FIRST:
        for i in options[name].split(","):
            if i.strip().isdigit() and int(i) < options["count"]:
                out.setdefault(int(i), dict(FIRST))[name] = "yes"
    return out


def _count(options):
    if not 1 <= options["count"] <= 100_000:
        raise ValueError(f"count must be at least 1 and at most 100000, got {options['count']}")
    return options["count"]


TASKS = [
    Task("Null", run="awepipe.null:null", estimate=lambda o: 5 + o["sleep"],
         doc="Does nothing (or sleeps, fails, echoes) - for testing the DPU itself.",
         options=(
             Option("s", "sleep", float, 0.0, "seconds to sleep"),
             Option("x", "fail", bool, False, "raise an error instead of succeeding"),
             Option("m", "message", str, "", "text logged and returned unchanged"),
             Option("n", "count", int, 1, "number of processes"),
             Option("mb", "allocate", int, 0, "MB of memory to allocate"),
             Option("ff", "fail_first", str, "", "process indices (e.g. 1,3) failing on their "
                    "first attempt only, to try dpu.rerun"),
             Option("sf", "slow_first", str, "", "process indices (e.g. 2,6) sleeping 150 s on "
                    "their first attempt only (past a short time limit), to try dpu.rerun --more-time"),
             Option("xo", "fail_odd", bool, False, "processes with an odd index fail"),
             COMMIT,
         ),
         split=lambda o: Processes.indexed(_count(o), _first_attempt(o), base=dict(FIRST))),
    Task("ReadNoise", run="awepipe.calib:read_noise", options=CALIB, split=per_ccd, estimate=10,
         doc="Read noise of each CCD from the difference of two bias frames."),
    Task("Bias", run="awepipe.calib:master_bias", options=CALIB, split=per_ccd, estimate=20,
         doc="Master bias: the median of the night's bias frames.", makes="BiasFrame"),
    Task("HotPixels", run="awepipe.calib:hot_pixels", options=CALIB, split=per_ccd, estimate=15,
         doc="Hot pixel map from the master bias.", requires=("Bias",), makes="HotPixelMap"),
    Task("DomeFlat", run="awepipe.imaging:dome_flat", split=per_ccd_at_night, estimate=10,
         options=(INSTRUMENT, CHIP, DATE, FILTER, TEMPLATE, PARS, COMMIT),
         doc="Master dome flat of each CCD in one filter: the night's dome flats, de-biased, stacked."),
    Task("Reduce", run="awepipe.imaging:reduce", split=per_ccd_of_fields,
         estimate=lambda o: 5 + 5 * len(archive.fields(o["object"])),
         options=(INSTRUMENT, CHIP, OBJECT, DATE, FILTER, TEMPLATE, PARS, COMMIT),
         doc="Science frames of the fields named, per CCD: de-biased and flat-fielded."),
]

SEQUENCES = ["Null>Null", "Bias>HotPixels", "Bias>ReadNoise"]
