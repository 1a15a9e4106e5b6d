"""Token-level steering: LLM decoding with one token per step, constraint potentials as token
masks, host-side critics, learned twists and prompt intersection."""
