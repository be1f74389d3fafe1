"""`xtune convert hf_to_gguf --ollama`: the Modelfile's Go template renders what the jinja template renders.

Ollama executes a Modelfile's TEMPLATE with Go's text/template over the conversation (`.Messages`, each
with `.Role` and `.Content`; `.System`, all system messages joined). `GoTemplate` below executes the
subset of text/template the Modelfiles use (text, `if` / `else if` / `else`, `range $i, $m := ...`,
`$v := ...` / `$v = ...`, fields, string and number literals, `eq ne gt and or not len index slice`,
parentheses), with Go's scoping and truth rules. For every registered template it has an Ollama form
for, the demo's conversation (system, user, answer, user, generation prompt) and its variants are
rendered both ways and compared; with `add_bos` the jinja text's leading BOS is llama.cpp's to add. Where
a Go toolchain is installed, the same comparison runs through the real text/template too. The CLI test
converts the tiny model and reads the Modelfile back as Ollama's parser reads it.
"""

from __future__ import annotations

import json
import re
import shutil
import subprocess

import jinja2
import pytest
from test_export_helpers import tiny_model_dir
from transformers.utils import chat_template_utils

from xtune.cli.main import main
from xtune.errors import UsageError
from xtune.export.ollama import go_template, lit, unsupported
from xtune.plugins import get_registry
from xtune.templates.export import export_jinja

REGISTRY = get_registry()
BOS = "<bos-token>"  # a BOS text that no template writes itself: where the BOS comes from is seen
CONVERSATIONS = {
    "demo": [{"role": "system", "content": "You are a concise assistant."},
             {"role": "user", "content": "Who are you?"},
             {"role": "assistant", "content": "I am xtune's demo model."},
             {"role": "user", "content": "What can you do?"}],
    "no system": [{"role": "user", "content": "Hello"}, {"role": "assistant", "content": "Hi there"},
                  {"role": "user", "content": "Tell me a joke."}],
    "one question": [{"role": "user", "content": "Hello"}],
    "later system": [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Hello"},
                     {"role": "assistant", "content": "Hi"}, {"role": "system", "content": "Now be poetic."},
                     {"role": "user", "content": "Describe the sea."}],
}


# ---------------------------------------------------------------------------------------- Go templates
_ACTION = re.compile(r'\{\{(?:[^"}]|"(?:[^"\\]|\\.)*"|\}(?!\}))*\}\}')
_TOKEN = re.compile(r'\s*(?:(?P<str>"(?:[^"\\]|\\.)*")|(?P<num>-?\d+)|(?P<lp>\()'
                    r"|(?P<rp>\))(?P<rpf>(?:\.\w+)*)|(?P<var>\$\w*(?:\.\w+)*)|(?P<field>(?:\.\w+)+)"
                    r"|(?P<word>\w+))")


class GoTemplate:
    """The subset of Go's text/template that the Modelfiles use (see the module docstring)."""

    def __init__(self, text: str):
        pieces, pos = [], 0
        for match in _ACTION.finditer(text):
            pieces += [("text", text[pos:match.start()]), ("action", match.group()[2:-2].strip())]
            pos = match.end()
        pieces.append(("text", text[pos:]))
        self.body, rest = self._parse(iter(pieces))
        assert rest is None, f"unexpected {{{{ {rest} }}}}"

    def _parse(self, pieces):
        """(nodes, the action that ended them: 'end' / 'else...' / None at the end of the text)."""
        nodes = []
        for kind, value in pieces:
            if kind == "text":
                nodes.append(("text", value))
            elif value == "end" or value.startswith("else"):
                return nodes, value
            elif value.startswith("if "):
                nodes.append(self._if(value[3:], pieces))
            elif value.startswith("range "):
                names, _, expr = value[6:].partition(":=")
                body, end = self._parse(pieces)
                assert end == "end", "range ... else is not used"
                nodes.append(("range", [n.strip() for n in names.split(",")], expr, body))
            elif re.match(r"\$\w+ :?= ", value):
                name, op, expr = value.split(" ", 2)
                nodes.append(("set", name, op == ":=", expr))
            else:
                nodes.append(("out", value))
        return nodes, None

    def _if(self, cond, pieces):
        branches, orelse = [], []
        while True:
            body, end = self._parse(pieces)
            branches.append((cond, body))
            if end.startswith("else if "):
                cond = end[8:]
            elif end == "else":
                orelse, end = self._parse(pieces)
                assert end == "end"
                return "if", branches, orelse
            else:
                return "if", branches, orelse

    def render(self, data) -> str:
        out = []
        self._run(self.body, data, [{"$": data}], out)
        return "".join(out)

    def _run(self, nodes, dot, scopes, out):
        for node in nodes:
            if node[0] == "text":
                out.append(node[1])
            elif node[0] == "out":
                value = self._eval(node[1], dot, scopes)
                out.append(("true" if value else "false") if isinstance(value, bool) else str(value))
            elif node[0] == "set":
                _, name, declare, expr = node
                value = self._eval(expr, dot, scopes)
                if declare:
                    scopes[-1][name] = value
                else:
                    next(s for s in reversed(scopes) if name in s)[name] = value
            elif node[0] == "if":
                for cond, body in node[1]:
                    if _truth(self._eval(cond, dot, scopes)):
                        self._run(body, dot, scopes + [{}], out)
                        break
                else:
                    self._run(node[2], dot, scopes + [{}], out)
            else:
                _, names, expr, body = node
                for i, item in enumerate(self._eval(expr, dot, scopes)):
                    self._run(body, item, scopes + [dict(zip(names, (i, item), strict=True))], out)

    def _eval(self, expr: str, dot, scopes):
        tokens = [m for m in _TOKEN.finditer(expr) if m.group().strip()]
        value, rest = self._command(tokens, dot, scopes)
        assert not rest, f"trailing {rest} in {expr!r}"
        return value

    def _command(self, tokens, dot, scopes):
        """A function call or a single term, up to a closing parenthesis; (value, tokens after it)."""
        if tokens[0].group("word") and tokens[0].group("word") not in ("true", "false"):
            name, args = tokens[0].group("word"), []
            tokens = tokens[1:]
            while tokens and not tokens[0].group("rp"):
                value, tokens = self._term(tokens, dot, scopes)
                args.append(value)
            return _FUNCS[name](*args), tokens
        return self._term(tokens, dot, scopes)

    def _term(self, tokens, dot, scopes):
        t, rest = tokens[0], tokens[1:]
        if t.group("str"):
            return json.loads(t.group("str")), rest
        if t.group("num"):
            return int(t.group("num")), rest
        if t.group("word"):
            return t.group("word") == "true", rest
        if t.group("field"):
            return _fields(dot, t.group("field")), rest
        if t.group("var"):
            name, _, chain = t.group("var").partition(".")
            value = next(s[name] for s in reversed(scopes) if name in s)
            return (_fields(value, "." + chain) if chain else value), rest
        value, rest = self._command(rest, dot, scopes)  # "(" ... ")" and the fields after it
        closing, rest = rest[0], rest[1:]
        return _fields(value, closing.group("rpf")) if closing.group("rpf") else value, rest


def _fields(value, chain: str):
    for name in chain.strip(".").split("."):
        value = value[name]
    return value


def _truth(value) -> bool:
    return bool(value)  # Go's truth: false, 0, "", empty lists and maps are false, as in Python


_FUNCS = {"eq": lambda a, b: a == b, "ne": lambda a, b: a != b, "gt": lambda a, b: a > b,
          "not": lambda a: not _truth(a), "and": lambda *a: all(map(_truth, a)),
          "or": lambda *a: any(map(_truth, a)), "len": len, "index": lambda x, i: x[i],
          "slice": lambda x, i: x[i:]}


def ollama_values(messages: list[dict], default_system: str | None) -> dict:
    """What Ollama hands the template: the SYSTEM prompt as the first message when the request has no
    system message, consecutive messages of one role merged, all system text as `.System`."""
    if default_system and messages[0]["role"] != "system":
        messages = [{"role": "system", "content": default_system}, *messages]
    merged = []
    for m in messages:
        if merged and merged[-1]["Role"] == m["role"]:
            merged[-1]["Content"] += "\n\n" + m["content"]
        else:
            merged.append({"Role": m["role"], "Content": m["content"]})
    system = "\n\n".join(m["content"] for m in messages if m["role"] == "system")
    return {"Messages": merged, "System": system}


def test_the_go_subset_follows_go_rules():
    t = GoTemplate('{{ $x := 0 }}{{ range $i, $m := .Messages }}{{ if eq $m.Role "user" }}{{ $x = $i }}'
                   '{{ end }}{{ end }}{{ $x }}|{{ (index .Messages 0).Content }}|{{ if and .Messages '
                   '(gt (len .Messages) 1) }}two{{ else if .System }}sys{{ else }}none{{ end }}|'
                   '{{ "a\\"}}" }}')
    assert t.render({"Messages": [{"Role": "user", "Content": "A"}, {"Role": "user", "Content": "B"}],
                     "System": ""}) == '1|A|two|a"}}'
    # literal braces and quotes next to an action are written as Go strings, so they cannot join it
    assert lit("a{") + "{{ .X }}" + lit('}"b') == '{{ "a{" }}{{ .X }}{{ "}\\"b" }}'
    assert GoTemplate(lit("a{") + "{{ .X }}" + lit('}"b')).render({"X": 1}) == 'a{1}"b'


# ---------------------------------------------------------------------------------------- templates
def _jinja(t, messages, **values):
    try:
        rendered, _ = chat_template_utils.render_jinja_template(
            [messages], chat_template=export_jinja(t, registry=REGISTRY), add_generation_prompt=True,
            date_string=t.date_string, **values)
    except jinja2.exceptions.TemplateError:
        return None  # the template refuses this conversation (e.g. a system message for Gemma)
    return rendered[0]


def _cases():
    """(template, conversation, add_bos) for every template with an Ollama form."""
    return [(t.name, name, add_bos) for t in REGISTRY.chat_templates if unsupported(t) is None
            for name in CONVERSATIONS for add_bos in (False, True)]


def _expected_and_go(template_name: str, conversation: str, add_bos: bool) -> tuple[str, str, dict] | None:
    t = REGISTRY.chat_templates.get(template_name)
    messages = CONVERSATIONS[conversation]
    expected = _jinja(t, messages, bos_token=BOS, eos_token=t.eos_token)
    if expected is None or (t.later_system in ("refuse", "drop") and conversation == "later system"):
        return None
    if add_bos:
        expected = expected.removeprefix(BOS)  # llama.cpp adds the BOS token itself
    go = go_template(t, registry=REGISTRY, bos_token=BOS, eos_token=t.eos_token, add_bos=add_bos)
    return expected, go, ollama_values(messages, t.default_system)


@pytest.mark.parametrize("template_name", [t.name for t in REGISTRY.chat_templates if unsupported(t) is None])
def test_the_ollama_template_renders_the_jinja_text(template_name):
    """Each conversation the template renders (with and without llama.cpp adding BOS, with and without
    Ollama putting the SYSTEM prompt first) gives the jinja text."""
    compared = 0
    for case in _cases():
        if case[0] != template_name or (found := _expected_and_go(*case)) is None:
            continue
        expected, go, values = found
        assert GoTemplate(go).render(values) == expected, case
        plain = ollama_values(CONVERSATIONS[case[1]], None)  # no SYSTEM: the template's own default
        assert GoTemplate(go).render(plain) == expected, case
        compared += 1
    assert compared >= 4


def test_templates_without_an_ollama_form_are_refused_in_one_line():
    refused = {t.name for t in REGISTRY.chat_templates if unsupported(t)}
    assert {"qwen3_chat", "idefics3"} <= refused
    with pytest.raises(UsageError, match="chat template 'qwen3_chat' has no Ollama form in xtune: its qwen3"):
        go_template("qwen3_chat", registry=REGISTRY, bos_token="", eos_token="<|im_end|>", add_bos=False)


@pytest.mark.integration
@pytest.mark.skipif(shutil.which("go") is None, reason="no Go toolchain here: the Python subset stands in")
def test_real_go_text_template_agrees(tmp_path):
    """Every case at once through Go's own text/template (one `go run`)."""
    cases = [c for case in _cases() if (c := _expected_and_go(*case)) is not None]
    (tmp_path / "cases.json").write_text(json.dumps([{"template": go, "values": values}
                                                     for _, go, values in cases]))
    (tmp_path / "main.go").write_text(_GO_PROGRAM)
    done = subprocess.run(["go", "run", "main.go"], cwd=tmp_path, capture_output=True, text=True, timeout=300,
                          env={**__import__("os").environ, "GOFLAGS": "-mod=mod", "GO111MODULE": "off"})
    assert done.returncode == 0, done.stderr
    assert json.loads(done.stdout) == [expected for expected, _, _ in cases]


_GO_PROGRAM = """package main

import (
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"text/template"
)

type Message struct{ Role, Content string }
type Case struct {
	Template string
	Values   struct {
		Messages []Message
		System   string
	}
}

func main() {
	raw, _ := os.ReadFile("cases.json")
	var cases []Case
	if err := json.Unmarshal(raw, &cases); err != nil {
		panic(err)
	}
	var out []string
	for _, c := range cases {
		t := template.Must(template.New("").Parse(c.Template))
		var b strings.Builder
		values := map[string]any{"Messages": c.Values.Messages, "System": c.Values.System}
		if err := t.Execute(&b, values); err != nil {
			panic(err)
		}
		out = append(out, b.String())
	}
	text, _ := json.Marshal(out)
	fmt.Println(string(text))
}
"""


# ---------------------------------------------------------------------------------------- the CLI
def read_modelfile(text: str) -> list[tuple[str, str]]:
    """(command, argument) pairs as Ollama's parser reads them: quoted arguments, triple quotes spanning
    lines, comments skipped."""
    found = []
    for match in re.finditer(r'^(\w+)(?: (\w+))? ("""(.*?)"""|"([^"\n]*)"|([^\n]*))$', text, re.M | re.S):
        command = match.group(1).upper() + (f" {match.group(2)}" if match.group(2) else "")
        value = next(v for v in match.group(4, 5, 6) if v is not None)
        found.append((command, value))
    return found


@pytest.mark.integration
def test_hf_to_gguf_ollama_writes_a_modelfile_beside_the_gguf(tmp_path, capsys):
    from transformers import AutoTokenizer

    model_dir = tiny_model_dir(tmp_path / "tiny")
    out = tmp_path / "gguf" / "tiny.gguf"
    out.parent.mkdir()
    assert main(["convert", "hf_to_gguf", str(model_dir), str(out), "--ollama"]) == 0
    modelfile = out.parent / "Modelfile"
    assert f"wrote {modelfile}" in capsys.readouterr().out
    commands = read_modelfile(modelfile.read_text(encoding="utf-8"))
    assert commands[0] == ("FROM", "./tiny.gguf")
    values = dict(commands)
    t = REGISTRY.chat_templates.get("smollm2_chat")
    assert values["SYSTEM"] == t.default_system
    assert [v for c, v in commands if c == "PARAMETER stop"] == ["<|im_end|>", "<|endoftext|>"]
    tokenizer = AutoTokenizer.from_pretrained(model_dir)
    messages = CONVERSATIONS["demo"]
    expected = tokenizer.apply_chat_template(messages, tokenize=False, add_generation_prompt=True)
    assert GoTemplate(values["TEMPLATE"]).render(ollama_values(messages, values["SYSTEM"])) == expected
    # an existing Modelfile is kept unless --force; a template without Ollama form is one line
    assert main(["convert", "hf_to_gguf", str(model_dir), str(tmp_path / "gguf" / "b.gguf"), "--ollama"]) == 2
    assert "Modelfile exists" in capsys.readouterr().err
    assert main(["convert", "hf_to_gguf", str(model_dir), str(out), "--force",
                 "--ollama-template", "qwen3_chat"]) == 2
    err = capsys.readouterr().err.strip().splitlines()
    assert len(err) == 1 and "has no Ollama form in xtune" in err[0]
