"""Instruments the example pipeline knows, with their CCD names."""

INSTRUMENTS = {
    "WFI": [f"ccd{n}" for n in range(50, 58)],
    "OMEGACAM": [f"ESO_CCD_#{n}" for n in range(65, 97)],
}
