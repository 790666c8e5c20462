"""Learned prompts and adapters on K labelled shots: CoOp, CoCoOp, KgCoOp-style CoOp, visual prompt padding, Tip-Adapter."""
