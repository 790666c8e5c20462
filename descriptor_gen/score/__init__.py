"""Stage 4: CLIP features with their caches, text forms and classifiers, metrics, `descgen eval`."""
