"""Stage 5: sweeps over prompt options, results keyed by cell identity, reports, the demo."""
