"""XMM-Newton EPIC-pn denoising (x1) and super-resolution (x2): King PSF, simulator, FITS I/O, photometry, hallucination maps."""
