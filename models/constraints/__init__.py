"""Constraints on generated text, in one place: byte automata (regexes, JSON schemas, character
and word rules), their lift to token masks, grammar critics, and the sequence-potential
contract they all satisfy."""
