"""Data: readers, validation, prepare, the Bundle, sampling, the synthetic world."""
