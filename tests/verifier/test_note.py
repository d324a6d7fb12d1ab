"""C2SP signed notes: known answers, round-trips, the spec's verification rules, malformed input."""

from __future__ import annotations

import base64

import pytest
from hypothesis import given
from hypothesis import strategies as st

import keys
from verifier.errors import NoteError
from verifier.note import (
    MAX_SIGNATURES,
    NoteSigner,
    NoteVerifier,
    Signature,
    add_signatures,
    b64decode_strict,
    note_key_id,
    open_note,
    sign_note,
    split_note,
)

# FORMATS-REFERENCE.md: a checkpoint verified by three independent implementations.
LEDGER_VKEY = "ledger.example.org/unions/2026+3c08fd75+AcZV6mi8EuxiMW9jth9nDyEy677aFq79xwu3tiUeRVqX"
LEDGER_TEXT = "ledger.example.org/unions/2026\n777\nsxQyi2MXKQ4x8Hv0ZaAGQMU7qNGREO8W6nEhxS1C8ws=\n"
LEDGER_NOTE = (
    LEDGER_TEXT
    + "\n— ledger.example.org/unions/2026 PAj9dYh6TzUZX+mymIjIKx4qTycED7QufaW+rS0jGMkJVyx0fELo2bb3"
    "wH28plRS3FpbTBc5+cni8b2SYMSQGUfUVQM=\n"
)

# golang.org/x/mod/sumdb/note, the package documentation's example (Ed25519 is deterministic,
# so signing with its private key must reproduce the note byte for byte).
GO_SKEY = "PRIVATE+KEY+PeterNeumann+c74f20a3+AYEKFALVFGyNhPJEMzD1QIDr+Y7hfZx09iUvxdXHKDFz"
GO_VKEY = "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW"
GO_TEXT = (
    "If you think cryptography is the answer to your problem,\n"
    "then you don't know what your problem is.\n"
)
GO_NOTE = (
    GO_TEXT + "\n— PeterNeumann x08go/ZJkuBS9UG/SffcvIAQxVBtiFupLLr8pAcElZInNIuGUgYN1FFYC2pZSN"
    "XgKvqfqdngotpRZb6KE6RyyBwJnAM=\n"
)

# transparency-dev/formats note tests: a type 0x01 key whose base64 holds a '+', and a type 0x04.
PLUS_VKEY = "TEST+7997405c+AQcC+FTVKf0jlTdHDY3rbevmnKxxPjigCXlVtGe6RIr6"
COSIGNATURE_VKEY = "remora.n621.de+da77ade7+BOvN63jn/bLvkieywe8R6UYAtVtNbZpXh34x7onlmtw2"


def signer(name: str, seed: int) -> NoteSigner:
    return NoteSigner(name, keys.PrivateKey.from_seed(bytes([seed]) * 32))


ALICE = signer("alice.example/log", 1)
BOB = signer("bob.example/witness", 2)
TEXT = "hello\nworld\n"


# --- known answers ----------------------------------------------------------------------------


def test_formats_reference_checkpoint_verifies() -> None:
    verifier = NoteVerifier.from_key_string(LEDGER_VKEY)
    assert verifier.key_id.hex() == "3c08fd75"
    assert note_key_id(verifier.name, verifier.public_key) == bytes.fromhex("3c08fd75")
    assert verifier.key_string() == LEDGER_VKEY
    opened = open_note(LEDGER_NOTE, [verifier])
    assert opened.text == LEDGER_TEXT
    assert opened.verified_by == ("ledger.example.org/unions/2026",)
    assert opened.signatures[0].key_id == bytes.fromhex("3c08fd75")
    assert opened.unverified == ()


def test_go_sumdb_note_example_verifies_and_signing_reproduces_it() -> None:
    verifier = NoteVerifier.from_key_string(GO_VKEY)
    assert open_note(GO_NOTE, [verifier]).text == GO_TEXT
    seed = base64.b64decode(GO_SKEY.split("+", 4)[4])[1:]
    go_signer = NoteSigner("PeterNeumann", keys.PrivateKey.from_seed(seed))
    assert go_signer.verifier() == verifier
    assert go_signer.sign(GO_TEXT) == GO_NOTE


def test_key_string_whose_base64_contains_a_plus() -> None:
    verifier = NoteVerifier.from_key_string(PLUS_VKEY)
    assert verifier.name == "TEST"
    assert verifier.key_string() == PLUS_VKEY


def test_key_string_of_another_signature_type_is_refused() -> None:
    with pytest.raises(NoteError, match="type 0x04"):
        NoteVerifier.from_key_string(COSIGNATURE_VKEY)


def test_upper_case_hex_key_id_is_accepted() -> None:
    name, hex_id, key = GO_VKEY.split("+")
    upper = f"{name}+{hex_id.upper()}+{key}"
    assert NoteVerifier.from_key_string(upper).key_string() == GO_VKEY


@pytest.mark.parametrize(
    "vkey",
    [
        "",
        "PeterNeumann",
        "PeterNeumann+c74f20a3",
        "+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # empty name
        "Peter Neumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # space in name
        "PeterNeumann+c74f20a4+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # wrong id
        "PeterNeumann+c74f20a+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # 7 hex digits
        "PeterNeumann+0xc74f20+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq_LDE4izWy10TW",  # base64url
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW=",
        "PeterNeumann+c74f20a3+ARpc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TWAA==",  # 34 bytes
        "PeterNeumann+c74f20a3+Apc2QcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",
        "PeterNeumann+c74f20a3+AhpcQcUPDhMQegwxbzhKqiBfsVkmqq/LDE4izWy10TW",  # type 0x02
    ],
)
def test_malformed_key_strings_are_refused(vkey: str) -> None:
    with pytest.raises(NoteError):
        NoteVerifier.from_key_string(vkey)


def test_every_deletion_from_a_key_string_is_refused() -> None:
    # After golang.org/x/mod/sumdb/note's TestNewVerifier: no mangling may parse.
    for i in range(len(GO_VKEY)):
        for j in range(i + 1, len(GO_VKEY) + 1):
            with pytest.raises(NoteError):
                NoteVerifier.from_key_string(GO_VKEY[:i] + GO_VKEY[j:])


# --- signing and opening ----------------------------------------------------------------------


def test_sign_and_open() -> None:
    note = ALICE.sign(TEXT)
    assert note.startswith(TEXT + "\n— alice.example/log ")
    opened = open_note(note, [ALICE.verifier()])
    assert opened.text == TEXT
    assert opened.verified_by == ("alice.example/log",)


@pytest.mark.parametrize("text", ["a\n\nb\n", "a\n\n", "\n", "漢字 — with an em dash\n", "x+y z\n"])
def test_texts_with_blank_lines_and_unicode_round_trip(text: str) -> None:
    assert open_note(ALICE.sign(text), [ALICE.verifier()]).text == text


def test_several_signers_and_unknown_signatures_are_ignored() -> None:
    note = sign_note(TEXT, [ALICE, BOB])
    opened = open_note(note, [BOB.verifier()])
    assert opened.verified_by == ("bob.example/witness",)
    assert [s.name for s in opened.unverified] == ["alice.example/log"]
    both = open_note(note, [ALICE.verifier(), BOB.verifier()])
    assert both.verified_by == ("alice.example/log", "bob.example/witness")


def test_add_signatures_appends_lines() -> None:
    note = add_signatures(ALICE.sign(TEXT), [BOB])
    assert note == sign_note(TEXT, [ALICE, BOB])
    with pytest.raises(NoteError, match="twice"):
        add_signatures(note, [BOB])


def test_no_trusted_signature_is_rejected() -> None:
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(ALICE.sign(TEXT), [BOB.verifier()])


def test_no_trusted_keys_is_rejected() -> None:
    with pytest.raises(NoteError, match="no trusted keys"):
        open_note(ALICE.sign(TEXT), [])


def test_a_known_keys_bad_signature_rejects_the_whole_note() -> None:
    forged = sign_note(TEXT, [BOB]) + ALICE.sign("other\n").split("\n\n", 1)[1]
    with pytest.raises(NoteError, match="does not verify"):
        open_note(forged, [ALICE.verifier(), BOB.verifier()])
    # Alone, Bob's valid signature would have been enough: the bad one still rejects.
    assert open_note(forged, [BOB.verifier()]).verified_by == ("bob.example/witness",)


def test_same_name_other_key_is_ignored_not_rejected() -> None:
    impostor = signer("alice.example/log", 9)  # same name, different key and key id
    note = sign_note(TEXT, [impostor, ALICE])
    assert open_note(note, [ALICE.verifier()]).verified_by == ("alice.example/log",)
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(impostor.sign(TEXT), [ALICE.verifier()])


def test_same_key_id_other_name_is_ignored() -> None:
    sig = split_note(ALICE.sign(TEXT))[1][0]
    renamed = TEXT + "\n" + Signature("mallory.example", sig.key_id, sig.signature).line()
    with pytest.raises(NoteError, match="no signature by a trusted key"):
        open_note(renamed, [ALICE.verifier()])


def test_a_trusted_key_that_signed_twice_counts_once_and_both_must_verify() -> None:
    note = ALICE.sign(TEXT)
    line = note.split("\n\n", 1)[1]
    assert open_note(note + line, [ALICE.verifier()]).verified_by == (ALICE.name,)
    bad = ALICE.sign("other\n").split("\n\n", 1)[1]
    with pytest.raises(NoteError, match="does not verify"):
        open_note(note + bad, [ALICE.verifier()])


def test_ambiguous_trusted_keys_are_refused() -> None:
    # A forged verifier object with Alice's name and id but Bob's key.
    bogus = BOB.verifier()
    object.__setattr__(bogus, "name", ALICE.name)
    object.__setattr__(bogus, "key_id", ALICE.key_id)
    with pytest.raises(NoteError, match="share name and key id"):
        open_note(ALICE.sign(TEXT), [ALICE.verifier(), bogus])


def test_sixteen_and_the_maximum_number_of_signatures_are_accepted() -> None:
    signers = [signer(f"s{i}.example", i) for i in range(MAX_SIGNATURES)]
    for count in (16, MAX_SIGNATURES):
        note = sign_note(TEXT, signers[:count])
        opened = open_note(note, [s.verifier() for s in signers[:count]])
        assert len(opened.verified_by) == count
    too_many = sign_note(TEXT, signers) + signer("extra.example", 255).signature_line(TEXT)
    with pytest.raises(NoteError, match="more than"):
        open_note(too_many, [ALICE.verifier()])


# --- malformed notes --------------------------------------------------------------------------


def _sig_line() -> str:
    return ALICE.sign(TEXT).split("\n\n", 1)[1]


@pytest.mark.parametrize(
    "note",
    [
        "",
        TEXT,  # no signatures at all
        TEXT + "\n",  # a blank line and nothing after it
        TEXT + "\n" + _sig_line()[:-1],  # no final newline
        TEXT + "\n" + _sig_line() + "\n",  # trailing blank line
        TEXT + _sig_line(),  # no blank line
        TEXT + "\n" + _sig_line().replace("—", "-"),  # hyphen, not em dash
        TEXT + "\n" + _sig_line().replace("— ", "—"),
        TEXT + "\n" + _sig_line().replace("— ", "—  "),
        TEXT + "\n" + _sig_line().replace(" ", "  ").replace("—  ", "— "),  # two spaces
        TEXT + "\n" + _sig_line().replace("=\n", "\n"),  # unpadded base64
        TEXT + "\n" + _sig_line().replace("+", "-").replace("/", "_"),  # base64url
        TEXT + "\n" + "— alice.example/log AAAAAAA=\n",  # an unknown (all-zero) key id
        TEXT + "\n" + "— alice.example/log AAAAAA==\n",  # 4 bytes: no signature
        "hello\r\nworld\n\n" + _sig_line(),  # carriage return
        "hello\tworld\n\n" + _sig_line(),  # tab
        "hello\x00\n\n" + _sig_line(),
        "hello\ud800\n\n" + _sig_line(),  # lone surrogate: not UTF-8
    ],
)
def test_malformed_notes_are_rejected(note: str) -> None:
    with pytest.raises(NoteError):
        open_note(note, [ALICE.verifier()])


def test_open_note_refuses_bytes() -> None:
    with pytest.raises(TypeError):
        open_note(ALICE.sign(TEXT).encode(), [ALICE.verifier()])  # type: ignore[arg-type]


@pytest.mark.parametrize("text", ["", "no newline", "a\rb\n", "\x1b[31mred\n", "\ud800\n"])
def test_invalid_texts_cannot_be_signed(text: str) -> None:
    with pytest.raises(NoteError):
        ALICE.sign(text)


def test_signing_needs_distinct_signers() -> None:
    with pytest.raises(NoteError, match="at least one signer"):
        sign_note(TEXT, [])
    with pytest.raises(NoteError, match="twice"):
        sign_note(TEXT, [ALICE, ALICE])


@pytest.mark.parametrize("name", ["", "a b", "a+b", "a\u00a0b", "a\u2003b", "a\nb", "a\x01b"])
def test_invalid_key_names_are_refused(name: str) -> None:
    with pytest.raises(NoteError):
        NoteSigner(name, ALICE.private_key)
    with pytest.raises(NoteError):
        NoteVerifier(name, ALICE.private_key.public_key)


@pytest.mark.parametrize(
    "text",
    ["", "AA==", "AAA=", "AAAA", "3q2+7w=="],  # canonical forms, empty included
)
def test_b64decode_strict_accepts_canonical_base64(text: str) -> None:
    assert base64.b64encode(b64decode_strict(text)).decode() == text


@pytest.mark.parametrize("text", ["A", "AA", "AA=", "AB==", "AA==\n", " AA==", "3q2-7w==", "Ａ==="])
def test_b64decode_strict_refuses_everything_else(text: str) -> None:
    with pytest.raises(ValueError, match="base64"):
        b64decode_strict(text)


# --- properties -------------------------------------------------------------------------------

note_lines = st.lists(st.text(st.characters(min_codepoint=0x20, codec="utf-8")), min_size=1)


@given(note_lines)
def test_any_valid_text_round_trips(lines: list[str]) -> None:
    text = "".join(line + "\n" for line in lines)
    note = sign_note(text, [ALICE, BOB])
    opened = open_note(note, [ALICE.verifier(), BOB.verifier()])
    assert opened.text == text
    assert opened.verified_by == (ALICE.name, BOB.name)


@given(note_lines, st.data())
def test_any_single_character_change_is_rejected(lines: list[str], data: st.DataObject) -> None:
    note = ALICE.sign("".join(line + "\n" for line in lines))
    position = data.draw(st.integers(0, len(note) - 1), label="position")
    char = data.draw(st.characters(codec="utf-8"), label="char")
    kind = data.draw(st.sampled_from(["replace", "insert", "delete"]), label="kind")
    if kind == "replace":
        tampered = note[:position] + char + note[position + 1 :]
    elif kind == "insert":
        tampered = note[:position] + char + note[position:]
    else:
        tampered = note[:position] + note[position + 1 :]
    if tampered == note:
        return
    with pytest.raises(NoteError):
        open_note(tampered, [ALICE.verifier()])
