"""Deterministic synthetic raw frames: the same (instrument, chip, date, frame) gives the same pixels."""
import hashlib
import random

SIZE = 96  # pixels per side; small enough for pure Python, big enough for honest statistics


def _rng(*key):
    digest = hashlib.sha256("|".join(str(k) for k in key).encode()).digest()
    return random.Random(int.from_bytes(digest[:8], "big"))


def ccd_properties(instrument, chip):
    """Bias level (ADU), read noise (ADU) and hot pixel positions of one CCD."""
    rng = _rng("ccd", instrument, chip)
    level = rng.uniform(300.0, 500.0)
    noise = rng.uniform(1.8, 4.5)
    hot = sorted({rng.randrange(SIZE * SIZE) for _ in range(rng.randint(3, 12))})
    return level, noise, hot


def bias_frame(instrument, chip, date, number):
    """One raw bias frame as a flat list of pixel values, with a few cosmic-ray hits."""
    level, noise, hot = ccd_properties(instrument, chip)
    rng = _rng("bias", instrument, chip, date, number)
    pixels = [rng.gauss(level, noise) for _ in range(SIZE * SIZE)]
    for pos in hot:
        pixels[pos] += 2000.0 + 50.0 * number
    for _ in range(5):  # cosmic rays: what the sigma clipping is for
        pixels[rng.randrange(SIZE * SIZE)] += rng.uniform(500.0, 5000.0)
    return pixels


def frame_name(instrument, chip, date, number):
    return f"{instrument}.{date}T07:{43 + number:02d}:44.905_{chip}.fits"
