"""The synthetic raw-data archive behind DomeFlat and Reduce: filters, observed fields, frames.

Pure data and the standard library: the task declarations (dpu_tasks.py) import it on the
client to check the options and split a run, the task code imports it inside the job.
"""
import fnmatch
import re

from awepipe import synthetic

FILTERS = {
    "WFI": ["#842", "#843", "#844", "#845", "#846"],
    "OMEGACAM": ["u_SDSS", "g_SDSS", "r_SDSS", "i_SDSS", "z_SDSS"],
}
# Every night of the archive holds these fields in every filter (deterministic, nothing stored).
FIELDS = [f"CDF4_{part}_{n}" for part in "AB" for n in range(1, 5)] + ["SA107_1", "SA107_2"]
DATE = re.compile(r"^\d{4}-\d\d-\d\d$")


def check_night(options):
    """A ValueError saying what to give when the filter or the night is missing or unknown."""
    name, band = options["instrument"], options["filter"]
    if not DATE.match(options["date"] or ""):
        raise ValueError(f"give the night of the observations as d='YYYY-MM-DD' "
                         f"(got {options['date']!r})")
    if band not in FILTERS.get(name, []):
        raise ValueError(f"{name} has no filter {band!r}; give one of "
                         f"{', '.join(FILTERS.get(name, []))} with f=...")


def fields(pattern):
    """The observed fields whose name matches `pattern` (``?`` one character, ``*`` any)."""
    return [f for f in FIELDS if fnmatch.fnmatchcase(f, pattern)]


def check_fields(pattern):
    """The fields `pattern` names, or a ValueError listing the fields there are."""
    if not pattern:
        raise ValueError("give the field name (a pattern: ? is one character) with o=..., "
                         "e.g. o='CDF4_B_?'")
    found = fields(pattern)
    if not found:
        raise ValueError(f"no observed field matches o={pattern!r}; fields: {', '.join(FIELDS)}")
    return found


def response(instrument, chip, band):
    """The CCD's relative sensitivity in this filter: a gentle gradient and 1% pixel noise."""
    rng = synthetic._rng("flat", instrument, chip, band)
    gx, gy = rng.uniform(-0.08, 0.08), rng.uniform(-0.08, 0.08)
    size = synthetic.SIZE
    return [1.0 + gx * (i % size / size - 0.5) + gy * (i // size / size - 0.5) + rng.gauss(0, 0.01)
            for i in range(size * size)]


def dome_flat_frame(instrument, chip, band, date, number):
    """One raw dome flat: bias plus lamp light times the response, with noise."""
    level, noise, _ = synthetic.ccd_properties(instrument, chip)
    rng = synthetic._rng("domeflat", instrument, chip, band, date, number)
    lamp = rng.uniform(15000.0, 25000.0)
    return [level + lamp * r + rng.gauss(0, noise + 0.01 * lamp)
            for r in response(instrument, chip, band)]


def science_frame(instrument, chip, band, date, field):
    """One raw science frame of a field: bias plus sky times the response, a few stars, noise."""
    level, noise, _ = synthetic.ccd_properties(instrument, chip)
    rng = synthetic._rng("science", instrument, chip, band, date, field)
    sky = rng.uniform(800.0, 1500.0)
    pixels = [level + sky * r + rng.gauss(0, noise + sky ** 0.5)
              for r in response(instrument, chip, band)]
    for _ in range(rng.randint(5, 25)):
        pixels[rng.randrange(len(pixels))] += rng.uniform(2000.0, 20000.0)
    return pixels


def frame_name(instrument, chip, band, date, tag):
    """A raw frame's file name, as the archive would call it (`tag`: a number or a field)."""
    return f"{instrument}.{date}_{tag}_{band.lstrip('#')}_{chip}.fits"
