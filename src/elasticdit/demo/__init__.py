"""A small text-to-image demo world: flat-shape scenes with GenEval-style prompts, and their scorer."""
