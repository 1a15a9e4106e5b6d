"""Context-free constraints: a Lark grammar as a sequence potential over bytes.

`LarkGrammar(grammar)` builds Lark's LALR parser (contextual lexer) for a grammar in Lark syntax:

    complete(x) = 0 if the whole text parses, else -inf
    prefix(x)   = 0 if x may extend to a text that parses, else -inf.

The prefix test lexes x with the parser's own lexer, feeding each token to the parser. x may
end inside a token, and a token that starts at position p may lex differently once more text
follows (it may run on past the end of x), so each place p where the last, unfinished token
could start (each token start, each position in a run of `%ignore`d text, where lexing fails)
is tried, until the parser rejects a token: x is alive if the rest x[p:] is a prefix of some
terminal the parser shifts next, or of an ignored terminal, or if every token lexed and was
accepted. Prefixes of terminals are read on their automata (`interegular`, over characters,
cached per grammar). The result is monotone (if x is found dead, so is every extension) and
never kills a prefix that has a completion; it may keep one that has none, as the contract
allows: an accepted token sequence may have no completion that lexes into the tokens it needs,
and an automaton accepts its regex's full matches, more than the lexer takes from a lazy regex
(a C-comment regex with `*?` also fully matches "/* a */ b */"). A terminal whose regex
`interegular` cannot read (lookarounds, backreferences) accepts any prefix, save Lark's
common.ESCAPED_STRING, read as its lookaround-free equivalent.

Bytes are decoded as UTF-8: an incomplete last character is left out by `prefix` and makes
`complete` -inf; invalid UTF-8 is -inf for both.

`ARITHMETIC` and `JSON` are example grammars.
"""

from __future__ import annotations

import codecs

import interegular
import lark
import numpy as np
from lark.exceptions import LarkError, UnexpectedCharacters, UnexpectedInput, UnexpectedToken
from lark.parsers.lalr_analysis import Shift
from lark.parsers.lalr_parser_state import ParserState

from ppl.models.constraints.sequence_potential import CONSTRAINTS

ARITHMETIC = r"""
?start: sum
?sum: product | sum "+" product -> add | sum "-" product -> sub
?product: atom | product "*" atom -> mul | product "/" atom -> div
?atom: INT | "(" sum ")"
INT: /[0-9]+/
%ignore " "
"""

JSON = r"""
?start: value
?value: object | array | STRING | NUMBER | "true" -> true | "false" -> false | "null" -> null
array: "[" [value ("," value)*] "]"
object: "{" [pair ("," pair)*] "}"
pair: STRING ":" value
STRING: /"(?:[^"\\\x00-\x1f]|\\["\\\/bfnrt]|\\u[0-9a-fA-F]{4})*"/
NUMBER: /-?(?:0|[1-9][0-9]*)(?:\.[0-9]+)?(?:[eE][+-]?[0-9]+)?/
%ignore /[ \t\n\r]+/
"""


class LarkGrammar:
    """The texts of a context-free grammar in Lark syntax, as a prefix/complete potential."""

    def __init__(self, grammar: str, start: str = "start"):
        try:
            self._lark = lark.Lark(grammar, parser="lalr", lexer="contextual", start=start)
        except LarkError as error:
            raise ValueError(
                f"Lark cannot build an LALR parser for this grammar: "
                f"{type(error).__name__}: {error}"
            ) from error
        self._ignored = tuple(self._lark.ignore_tokens)
        self._automata = {
            t.name: _TerminalAutomaton(t.pattern.to_regexp()) for t in self._lark.terminals
        }

    def complete(self, data: bytes) -> float:
        try:
            self._lark.parse(data.decode("utf-8"))
        except (UnicodeDecodeError, UnexpectedInput):
            return -np.inf
        return 0.0

    def prefix(self, data: bytes) -> float:
        try:  # the decoded text, less an incomplete last character
            text = codecs.getincrementaldecoder("utf-8")().decode(data, final=False)
        except UnicodeDecodeError:
            return -np.inf
        return 0.0 if self._alive(text) else -np.inf

    def _alive(self, text: str) -> bool:
        interactive = self._lark.parse_interactive(text)
        state = interactive.parser_state
        tokens = interactive.lexer_thread.lex(state)
        start = 0  # where the current run of ignored text (maybe empty) begins
        while True:
            try:
                token = next(tokens)
            except StopIteration:  # lexed to the end, every token accepted
                return True
            except UnexpectedCharacters as error:  # nothing lexes at error.pos_in_stream
                assert error.pos_in_stream is not None
                return self._unfinished(state, text, start, error.pos_in_stream)
            except UnexpectedToken as error:  # the contextual lexer found an unexpected token
                return self._unfinished(state, text, start, error.token.start_pos)
            if self._unfinished(state, text, start, token.start_pos):
                return True
            try:
                state.feed_token(token)
            except UnexpectedToken:
                return False
            start = token.end_pos

    def _unfinished(self, state: ParserState, text: str, start: int, stop: int) -> bool:
        """Whether, in parser state `state`, the text from some position in [start, stop] is a
        prefix of a terminal the parser accepts or of an ignored one."""
        if stop >= len(text):
            return True
        actions = state.parse_conf.states[state.position]
        candidates = [name for name in actions if name in self._automata] + list(self._ignored)
        for position in range(start, stop + 1):
            for name in candidates:
                if self._automata[name].live(text, position) and (
                    name in self._ignored or _shifts(state, name)
                ):
                    return True
        return False


@CONSTRAINTS.register(
    "grammar", "text that parses under a Lark grammar (or a built-in one: arithmetic, json)"
)
def _grammar(grammar: str) -> LarkGrammar:
    return LarkGrammar({"arithmetic": ARITHMETIC, "json": JSON}.get(grammar, grammar))


def _shifts(state: ParserState, terminal: str) -> bool:
    """Whether the LALR parser in `state` shifts `terminal` after its reductions (as
    `ParserState.feed_token` does, on a copy of the state stack only)."""
    states, stack = state.parse_conf.states, list(state.state_stack)
    while True:
        action = states[stack[-1]].get(terminal)
        if action is None:
            return False
        kind, rule = action
        if kind is Shift:
            return True
        if rule.expansion:
            del stack[-len(rule.expansion) :]
        stack.append(states[stack[-1]][rule.origin.name][1])


# regexes interegular cannot read, and lookaround-free ones that the lexer matches the same way
_EQUIVALENTS = {r'".*?(?<!\\)(\\\\)*?"': r'"(?:[^"\\\n]|\\.)*"'}  # common.ESCAPED_STRING


class _TerminalAutomaton:
    """Whether a text is a prefix of a full match of one terminal's regex (over characters)."""

    def __init__(self, pattern: str):
        try:
            fsm = interegular.parse_pattern(_EQUIVALENTS.get(pattern, pattern)).to_fsm()
        except (interegular.Unsupported, interegular.InvalidSyntax):  # lookbehinds, references..
            self.fsm = None
            return
        self.fsm = fsm
        live = set(fsm.finals)
        changed = True
        while changed:
            changed = False
            for state, moves in fsm.map.items():
                if state not in live and any(target in live for target in moves.values()):
                    live.add(state)
                    changed = True
        self.live_states = live

    def live(self, text: str, position: int) -> bool:
        if self.fsm is None:
            return True
        fsm, state = self.fsm, self.fsm.initial
        for char in text[position:]:
            target = fsm.map.get(state, {}).get(fsm.alphabet[char])
            if target is None or target not in self.live_states:
                return False
            state = target
        return state in self.live_states
