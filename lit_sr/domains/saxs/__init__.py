"""SAXS bremsstrahlung background removal on XFEL Jungfrau frames (Starke & Smid, HZDR 2023)."""
