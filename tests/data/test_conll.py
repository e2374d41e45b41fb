"""CoNLL / CoNLL-U readers and tagging-scheme conversion: parsing, errors naming file and line."""
from __future__ import annotations

import re
from pathlib import Path

import pytest

from rnnkit.data.conll import Sentence, convert_scheme, read_conll, read_conllu
from rnnkit.errors import ConfigError, DataError

from shared_data import DATA  # noqa: E402
CONLL2003 = DATA / "conll2003"
EWT = DATA / "ud_english_ewt"

SAMPLE = """-DOCSTART- -X- -X- O

EU NNP I-NP I-ORG
rejects VBZ I-VP O
German JJ I-NP I-MISC
. . O O


Peter NNP I-NP I-PER
Blackburn NNP I-NP I-PER
-DOCSTART- -X- -X- O

BRUSSELS NNP I-NP I-LOC
"""


def _head(path: Path, tmp_path: Path, sentences: int) -> Path:
    """A copy of the first ``sentences`` blank-line separated blocks of ``path``."""
    lines = []
    with open(path, encoding="utf-8") as f:
        for line in f:
            lines.append(line)
            sentences -= not line.strip()
            if sentences == 0:
                break
    return _write(tmp_path, "".join(lines), path.name)


def _write(tmp_path: Path, text: str | bytes, name: str = "f.txt") -> Path:
    path = tmp_path / name
    if isinstance(text, bytes):
        path.write_bytes(text)
    else:
        path.write_text(text, encoding="utf-8")
    return path


# --- read_conll ----------------------------------------------------------------------
def test_read_conll_sentences_tags_and_docstart_skipped(tmp_path):
    sents = read_conll(_write(tmp_path, SAMPLE))
    assert sents == [
        Sentence(["EU", "rejects", "German", "."], ["I-ORG", "O", "I-MISC", "O"]),
        Sentence(["Peter", "Blackburn"], ["I-PER", "I-PER"]),
        Sentence(["BRUSSELS"], ["I-LOC"]),
    ]
    assert [len(s) for s in sents] == [4, 2, 1]


def test_read_conll_other_columns_crlf_and_no_final_newline(tmp_path):
    text = "a DT x\r\nb NN y\r\n\r\nc VB z"
    path = _write(tmp_path, text.encode())
    assert read_conll(path, tag_col=1) == [Sentence(["a", "b"], ["DT", "NN"]), Sentence(["c"], ["VB"])]
    assert read_conll(path, columns=3, word_col=1, tag_col=0)[1] == Sentence(["VB"], ["c"])


def test_read_conll_wrong_column_count_names_file_and_line(tmp_path):
    path = _write(tmp_path, "-DOCSTART- -X- -X- O\n\nEU NNP I-NP I-ORG\nrejects VBZ O\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:4: expected 4 columns.*got 3"):
        read_conll(path)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:3: expected 3 columns, got 4"):
        read_conll(path, columns=3)


def test_read_conll_non_utf8_names_file_and_line(tmp_path):
    path = _write(tmp_path, b"a B\n\nc \xff\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:3: not UTF-8"):
        read_conll(path)


@pytest.mark.parametrize("text", ["", "\n\n  \n", "-DOCSTART- -X- -X- O\n\n"])
def test_read_conll_without_sentences_is_an_error(tmp_path, text):
    path = _write(tmp_path, text)
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: no sentences"):
        read_conll(path)


def test_read_conll_missing_file_and_bad_column_index(tmp_path):
    with pytest.raises(DataError, match="missing.txt"):
        read_conll(tmp_path / "missing.txt")
    path = _write(tmp_path, "\na B\n")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:2: tag_col=5 is out of range"):
        read_conll(path, tag_col=5)
    with pytest.raises(ConfigError, match="columns"):
        read_conll(path, columns=0)


@pytest.mark.skipif(not CONLL2003.is_dir(), reason="no shared CoNLL-2003 data")
def test_read_conll_real_file():
    sents = read_conll(CONLL2003 / "train.txt")
    assert len(sents) == 14041
    assert sents[0] == Sentence("EU rejects German call to boycott British lamb .".split(),
                                "I-ORG O I-MISC O O O I-MISC O O".split())
    assert sents[1] == Sentence(["Peter", "Blackburn"], ["I-PER", "I-PER"])
    assert not any(w == "-DOCSTART-" for s in sents for w in s.words)
    assert {t for s in sents for t in s.tags} <= {"O", "I-PER", "I-ORG", "I-LOC", "I-MISC",
                                                   "B-PER", "B-ORG", "B-LOC", "B-MISC"}


# --- read_conllu ---------------------------------------------------------------------
CONLLU = """# sent_id = 1
# text = Don't go.
1-2\tDon't\t_\t_\t_\t_\t_\t_\t_\t_
1\tDo\tdo\tAUX\tVBP\t_\t3\taux\t_\t_
2\tn't\tnot\tPART\tRB\t_\t3\tadvmod\t_\t_
3\tgo\tgo\tVERB\tVB\t_\t0\troot\t_\tSpaceAfter=No
3.1\tgone\tgo\tVERB\t_\t_\t_\t_\t0:root\t_
4\t.\t.\tPUNCT\t.\t_\t3\tpunct\t_\t_


# sent_id = 2
1\tHi\thi\tINTJ\t_\t_\t0\troot\t_\t_
"""


def test_read_conllu_skips_ranges_empty_nodes_and_comments(tmp_path):
    path = _write(tmp_path, CONLLU, "f.conllu")
    assert read_conllu(path) == [Sentence(["Do", "n't", "go", "."], ["AUX", "PART", "VERB", "PUNCT"]),
                                 Sentence(["Hi"], ["INTJ"])]
    assert read_conllu(path, field="xpos")[1].tags == ["_"]
    assert read_conllu(path, field="deprel")[0].tags == ["aux", "advmod", "root", "punct"]


def test_read_conllu_wrong_field_count_names_file_and_line(tmp_path):
    lines = CONLLU.splitlines()
    lines[4] = "2\tn't\tnot\tPART"
    path = _write(tmp_path, "\n".join(lines), "f.conllu")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:5: .*10 tab-separated fields, got 4"):
        read_conllu(path)


def test_read_conllu_bad_id_and_bytes_name_file_and_line(tmp_path):
    path = _write(tmp_path, CONLLU.replace("4\t.\t.", "x\t.\t."), "f.conllu")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:8: .*not a valid ID"):
        read_conllu(path)
    path = _write(tmp_path, CONLLU.encode().replace(b"Hi\t", b"H\xc3\t"), "g.conllu")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}:12: not UTF-8"):
        read_conllu(path)


def test_read_conllu_empty_file_and_unknown_field(tmp_path):
    path = _write(tmp_path, "# only a comment\n\n", "f.conllu")
    with pytest.raises(DataError, match=rf"{re.escape(str(path))}: no sentences"):
        read_conllu(path)
    with pytest.raises(ConfigError, match="'feats'.*upos, xpos"):
        read_conllu(path, field="feats")


@pytest.mark.skipif(not EWT.is_dir(), reason="no shared UD English EWT data")
def test_read_conllu_real_file(tmp_path):
    sents = read_conllu(EWT / "en_ewt-ud-dev.conllu")
    assert len(sents) == 2001
    assert all(len(s.words) == len(s.tags) > 0 for s in sents)
    assert {t for s in sents for t in s.tags} <= {
        "ADJ", "ADP", "ADV", "AUX", "CCONJ", "DET", "INTJ", "NOUN", "NUM", "PART", "PRON", "PROPN",
        "PUNCT", "SCONJ", "SYM", "VERB", "X", "_"}
    first = read_conllu(_head(EWT / "en_ewt-ud-train.conllu", tmp_path, 3))[0]
    assert first.words[:4] == ["Al", "-", "Zaman", ":"]
    assert first.tags[:4] == ["PROPN", "PUNCT", "PROPN", "PUNCT"]


# --- convert_scheme ------------------------------------------------------------------
IOB1 = "I-PER I-PER B-PER O I-LOC I-ORG O I-MISC".split()
BIO = "B-PER I-PER B-PER O B-LOC B-ORG O B-MISC".split()
IOBES = "B-PER E-PER S-PER O S-LOC S-ORG O S-MISC".split()


@pytest.mark.parametrize(("source", "target", "tags", "expected"), [
    ("IOB1", "BIO", IOB1, BIO),
    ("IOB1", "IOBES", IOB1, IOBES),
    ("BIO", "IOBES", BIO, IOBES),
    ("IOBES", "BIO", IOBES, BIO),
    ("BIO", "IOB1", BIO, IOB1),
    ("IOBES", "IOB1", IOBES, IOB1),
    ("BIO", "BIO", BIO, BIO),
    ("IOB1", "BIO", ["I-A", "I-A", "I-A", "O", "O", "I-A"], ["B-A", "I-A", "I-A", "O", "O", "B-A"]),
    ("BIO", "IOBES", ["B-A", "I-A", "I-A", "B-A", "I-B"], ["B-A", "I-A", "E-A", "S-A", "S-B"]),
    ("BIO", "IOBES", ["O", "I-A", "I-A"], ["O", "B-A", "E-A"]),     # loose BIO is repaired
    ("IOB1", "IOBES", [], []),
    ("IOB1", "BIO", ["O", "O"], ["O", "O"]),
])
def test_convert_scheme(source, target, tags, expected):
    assert convert_scheme(tags, source, target) == expected


def test_convert_scheme_round_trips():
    for source, tags in (("BIO", BIO), ("IOBES", IOBES)):
        for target in ("IOB1", "BIO", "IOBES"):
            assert convert_scheme(convert_scheme(tags, source, target), target, source) == tags


def test_convert_scheme_errors():
    with pytest.raises(ConfigError, match=r"'IOB2'.*IOB1, BIO, IOBES"):
        convert_scheme(BIO, "IOB2", "BIO")
    with pytest.raises(ConfigError, match=r"'bilou'.*IOB1, BIO, IOBES"):
        convert_scheme(BIO, "BIO", "bilou")
    with pytest.raises(DataError, match=r"tag 1 'E-PER'"):
        convert_scheme(["B-PER", "E-PER"], "BIO", "IOBES")
