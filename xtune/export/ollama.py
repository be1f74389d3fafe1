"""An Ollama `Modelfile` beside a GGUF file: `xtune convert hf_to_gguf ... --ollama`.

Ollama reads a chat template as a Go `text/template` over the conversation (`.Messages`, each with `.Role`
and `.Content`), not as jinja. Here an xtune template (a `ChatTemplate`, plain data) is translated into
that form directly, piece by piece as `xtune.templates.render` renders it: the opening text, the leading
system message (its own turn, folded into the first or last user message, or every system message
collected), each user turn and answer, and the generation prompt, so Ollama prompts the model with the
text it was trained on. Where Ollama differs, the Modelfile follows Ollama:

- llama.cpp adds the BOS token itself when the tokenizer does (`tokenizer.ggml.add_bos_token`), so the
  template's leading `{bos_token}` is left out then (writing it too would double it);
- a conversation that ends with an answer is continued (the answer is left open), Ollama's convention;
- messages are not stripped of surrounding white space (Go templates have no trim), and a system
  message where the template has none (Gemma's first one) is left out rather than refused;
- `{date_string}` is the template's fixed date (Ollama's `currentDate` has another format).

Templates whose logic has no such form (Qwen3's think blocks, Idefics3's image-aware content lead) are
refused with one error naming them. `PARAMETER stop` lists the template's stop words and the EOS text,
`SYSTEM` the template's default system prompt.
"""

from __future__ import annotations

import json
import re
from pathlib import Path

from xtune.errors import UsageError
from xtune.registry import ChatTemplate
from xtune.templates.render import get_template

BOS = "{bos_token}"
_EMPTY_IF = re.compile(r'\{\{ if (?:[^{}"]|"(?:[^"\\]|\\.)*")* \}\}\{\{ end \}\}')
_EMPTY_ELSE = re.compile(r"\{\{ else \}\}\{\{ end \}\}")
_FIRST_SYSTEM = "(index $.Messages 0).Content"


def unsupported(t: ChatTemplate) -> str | None:
    """Why `t` has no Go-template form here, or None."""
    if t.reasoning:
        return f"its {t.reasoning} think blocks depend on where the last user query is"
    if t.content_lead:
        return "its content lead depends on whether a message opens with an image"
    if t.system_placement == "collect" and (t.system_joiner != "\n\n" or t.round_start):
        return "its collected system messages are joined differently from Ollama's .System"
    return None


def lit(text: str) -> str:
    """`text` as literal template text; text that a Go template or a Modelfile could read otherwise
    (braces, which could join an action's, quotes, control characters) as a Go string in an action."""
    risky = any(c in '{}"' or (not c.isprintable() and c not in "\n\t") for c in text)
    return "{{ " + _string(text) + " }}" if risky and text else text


def tidy(template: str) -> str:
    """`template` without the branches that print nothing (`{{ if X }}{{ end }}`, an empty else)."""
    while True:
        shorter = _EMPTY_ELSE.sub("{{ end }}", _EMPTY_IF.sub("", template))
        if shorter == template:
            return template
        template = shorter


def _string(text: str) -> str:
    """A Go string literal (Go reads JSON's escapes)."""
    return json.dumps(text, ensure_ascii=False)


class _Writer:
    """The Go template of one xtune template, for one tokenizer (its BOS / EOS text, whether it adds BOS)."""

    def __init__(self, t: ChatTemplate, bos_token: str, eos_token: str, add_bos: bool):
        self.t, self.add_bos = t, add_bos
        self.values = {BOS: bos_token, "{eos_token}": eos_token, "{date_string}": t.date_string}
        # With add_bos, llama.cpp writes the BOS of the conversation's first text: of `bos`, or of the
        # first round when `bos` is empty.
        self.strip_bos_of = ("bos" if t.bos.startswith(BOS) else "round"
                             if not t.bos and t.round_start.startswith(BOS) else None) if add_bos else None

    def fill(self, fmt: str, content: str = "") -> str:
        """`fmt` with its placeholders: `{content}` as the template expression `content`."""
        out = []
        for i, piece in enumerate(fmt.split("{content}")):
            for key, value in self.values.items():
                piece = piece.replace(key, value)
            out.append(("{{ " + content + " }}" if i else "") + lit(piece))
        return "".join(out)

    def round(self, first: bool) -> str:
        fmt = self.t.round_start
        return self.fill(fmt[len(BOS):] if first and self.strip_bos_of == "round" else fmt)

    def template(self) -> str:
        t = self.t
        parts = [self.fill(t.bos[len(BOS):] if self.strip_bos_of == "bos" else t.bos),
                 '{{ $fu := 0 }}{{ if .Messages }}{{ if eq (index .Messages 0).Role "system" }}'
                 "{{ $fu = 1 }}{{ end }}{{ end }}"]
        if t.system_placement == "collect":
            parts.append('{{ $hs := false }}{{ range $j, $s := .Messages }}{{ if eq $s.Role "system" }}'
                         "{{ $hs = true }}{{ end }}{{ end }}")
        parts.append(self._opened())
        parts.append(self._system_turn())
        parts.append("{{ range $i, $m := .Messages }}{{ $last := eq (len (slice $.Messages $i)) 1 }}")
        parts.append('{{ if eq $m.Role "system" }}' + self._later_system())
        parts.append('{{ else if eq $m.Role "user" }}' + self._user())
        parts.append("{{ else }}" + self._assistant() + "{{ end }}")
        parts.append('{{ if $last }}{{ if ne $m.Role "assistant" }}' + self.fill(t.generation_prompt)
                     + "{{ end }}{{ end }}{{ end }}")
        return "".join(parts)

    def _has_system(self) -> str:
        """A condition: the conversation has a leading system text (its own or the default)."""
        if self.t.default_system is not None:
            return "true"
        return "$hs" if self.t.system_placement == "collect" else "(eq $fu 1)"

    def _opened(self) -> str:
        """`$open`: the system turn opened the first round (so the first user message does not)."""
        if not self.t.round_start or self.t.system_placement != "turn":  # (collect has no round_start)
            return ""
        return ("{{ $open := false }}{{ if " + self._has_system() + " }}{{ if gt (len .Messages) $fu }}"
                '{{ if eq (index .Messages $fu).Role "user" }}{{ $open = true }}{{ end }}{{ end }}{{ end }}')

    def _system_text(self, text_expr: str) -> str:
        """The system turn for a text (an expression), skipped when empty if the template says so."""
        body = self.fill(self.t.system, text_expr)
        if self.t.skip_empty_system:
            body = "{{ if " + text_expr + " }}" + body + "{{ end }}"
        opened = "{{ if $open }}" + self.round(first=True) + "{{ end }}" if self._opened() else ""
        return opened + body

    def _system_turn(self) -> str:
        t = self.t
        if t.system_placement not in ("turn", "collect"):
            return ""
        own = _FIRST_SYSTEM if t.system_placement == "turn" else "$.System"
        default = "" if t.default_system is None else self._system_text(_string(t.default_system))
        have = "(eq $fu 1)" if t.system_placement == "turn" else "$hs"
        return "{{ if " + have + " }}" + self._system_text(own) + "{{ else }}" + default + "{{ end }}"

    def _later_system(self) -> str:
        """A system message after the first (the first one is the system turn, or folded)."""
        t = self.t
        mode = t.later_system
        if t.system_placement == "collect" or mode in ("refuse", "drop"):
            return ""
        body = self.fill(t.system if mode == "same" else mode, "$m.Content")
        if t.skip_empty_system:
            body = "{{ if $m.Content }}" + body + "{{ end }}"
        return "{{ if eq $i 0 }}{{ else }}" + body + "{{ end }}"

    def _fold(self) -> str:
        """The system text folded before a user message's content (first_user / last_user placement)."""
        t = self.t
        where = "(eq $i $fu)" if t.system_placement == "first_user" else "$last"
        default = "" if t.default_system is None else self.fill(t.system, _string(t.default_system))
        return ("{{ if " + where + " }}{{ if eq $fu 1 }}" + self.fill(t.system, _FIRST_SYSTEM) + "{{ else }}"
                + default + "{{ end }}{{ end }}")

    def _user(self) -> str:
        t = self.t
        out = ""
        if t.round_start:
            both = self.round(first=True), self.round(first=False)
            start = both[1] if both[0] == both[1] else ("{{ if eq $i $fu }}" + both[0] + "{{ else }}"
                                                        + both[1] + "{{ end }}")
            out = ("{{ if and $open (eq $i $fu) }}{{ else }}" + start + "{{ end }}" if self._opened()
                   else start)
        head, _, tail = t.user.partition("{content}")
        content = "{{ $m.Content }}"
        if t.system_placement in ("first_user", "last_user"):
            content = self._fold() + content
        return out + self.fill(head) + content + self.fill(tail)

    def _assistant(self) -> str:
        t = self.t
        closing = self.fill(t.assistant_end) + self.fill(t.assistant_suffix)
        return (self.fill(t.generation_prompt) + self.fill(t.assistant, "$m.Content")
                + ("{{ if not $last }}" + closing + "{{ end }}" if closing else ""))


def go_template(template: str | ChatTemplate, *, registry, bos_token: str, eos_token: str,
                add_bos: bool) -> str:
    """The Ollama (Go text/template) form of `template` for a tokenizer with these BOS / EOS texts."""
    t = ollama_template(template, registry=registry)
    return tidy(_Writer(t, bos_token, eos_token, add_bos).template())


def ollama_template(template: str | ChatTemplate, *, registry) -> ChatTemplate:
    """The template `template`, or one error saying why it has no Ollama form here."""
    t = get_template(template, registry)
    why = unsupported(t)
    if why:
        raise UsageError(f"--ollama: chat template {t.name!r} has no Ollama form in xtune: {why}",
                         hint="write the Modelfile's TEMPLATE by hand, or convert without --ollama")
    return t


# ------------------------------------------------------------------------------------------ the Modelfile
def modelfile_path(gguf: str | Path) -> Path:
    """Where the Modelfile of `gguf` goes: `Modelfile` in the GGUF file's folder."""
    return Path(gguf).parent / "Modelfile"


def check_modelfile_free(gguf: str | Path, force: bool) -> Path:
    """The Modelfile's path for `gguf`; a UsageError when one is there and `force` is not given."""
    out = modelfile_path(gguf)
    if out.exists() and not force:
        raise UsageError(f"--ollama: {out} exists", hint="pass --force to replace it")
    return out


def gguf_tokenizer_facts(gguf: str | Path) -> dict:
    """What the Modelfile needs from a GGUF file: its chat template, BOS / EOS text, whether llama.cpp adds
    BOS."""
    from gguf import GGUFReader

    fields = GGUFReader(str(gguf)).fields

    def value(key, default=None):
        field = fields.get(key)
        return field.contents() if field is not None else default

    def token(key) -> str:
        index = value(key)
        return fields["tokenizer.ggml.tokens"].contents(int(index)) if index is not None else ""

    add_bos = value("tokenizer.ggml.add_bos_token")
    if add_bos is None:  # llama.cpp's default: SentencePiece-style vocabularies add BOS
        add_bos = value("tokenizer.ggml.model") == "llama"
    return {"chat_template": value("tokenizer.chat_template"), "add_bos": bool(add_bos),
            "bos_token": token("tokenizer.ggml.bos_token_id"),
            "eos_token": token("tokenizer.ggml.eos_token_id")}


def _quoted(value: str, what: str) -> str:
    """A Modelfile argument: in quotes, triple quotes when it has a quote or a line break."""
    if '"""' in value or value.endswith('"'):
        raise UsageError(f"--ollama: {what} {value!r} cannot be written in a Modelfile (it holds '\"\"\"' "
                         "or ends with a quote)")
    return f'"""{value}"""' if "\n" in value or '"' in value else f'"{value}"'


def modelfile_text(gguf_name: str, template: str | ChatTemplate, *, registry, bos_token: str, eos_token: str,
                   add_bos: bool) -> str:
    t = get_template(template, registry)
    lines = [f"# Ollama Modelfile written by xtune for {gguf_name} (chat template {t.name!r}):",
             f"#   ollama create NAME -f {modelfile_path(gguf_name).name} && ollama run NAME",
             f"FROM ./{gguf_name}",
             "TEMPLATE " + _quoted(go_template(t, registry=registry, bos_token=bos_token, eos_token=eos_token,
                                               add_bos=add_bos), "the template")]
    if t.default_system:
        lines.append("SYSTEM " + _quoted(t.default_system, "the default system prompt"))
    stops = list(dict.fromkeys([*t.stop_words, eos_token]))
    lines += ["PARAMETER stop " + _quoted(word, "the stop word") for word in stops if word]
    return "\n".join(lines) + "\n"


def write_modelfile(gguf: str | Path, *, registry, template: str | None = None, force: bool = False) -> Path:
    """Write the Modelfile beside `gguf` for `template` (default: the xtune template the file's chat
    template was exported from); returns its path."""
    from xtune.templates.export import find_template_name

    gguf = Path(gguf)
    out = check_modelfile_free(gguf, force)
    facts = gguf_tokenizer_facts(gguf)
    name = template or find_template_name(facts["chat_template"], registry=registry)
    if name is None:
        raise UsageError(f"--ollama: the chat template in {gguf.name} is not one of xtune's templates, so "
                         "xtune cannot translate it",
                         hint="name the template the model was trained with: --ollama-template NAME")
    text = modelfile_text(gguf.name, name, registry=registry, bos_token=facts["bos_token"],
                          eos_token=facts["eos_token"], add_bos=facts["add_bos"])
    from xtune.fileio import atomic_write_text

    return atomic_write_text(out, text)
