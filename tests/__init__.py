"""lpb tests: fast ones on LMQL's random model, end-to-end ones (marker `embedded`) on SmolLM2."""
