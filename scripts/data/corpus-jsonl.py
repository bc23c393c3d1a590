#!/usr/bin/env python3
"""Turns the unpacked Debian packages of the prepared corpus into JSON lines (one document per line, `text` key).

usage: corpus-jsonl.py ROOT OUTDIR
ROOT holds one folder per package (each a `dpkg-deb -x` of it) and kjv.txt (the `bible` program's one-verse-a-line
output); OUTDIR gets one .jsonl per source. Every source is public domain or under the WordNet 3.0 license; the
licenses, versions and token counts are in data/prepared/README.md.
"""
import gzip
import json
import re
import struct
import sys
import zlib
from collections import defaultdict
from pathlib import Path


def write(path, documents):
    documents = [d.strip() for d in documents if d.strip()]
    if not documents:
        sys.exit(f"corpus-jsonl: no text came out for {path.name}; the package's layout is not the one this script reads.")
    with open(path, "w", encoding="utf-8") as out:
        for text in documents:
            out.write(json.dumps({"text": text}, ensure_ascii=False) + "\n")
    print(f"{path.name}: {len(documents)} documents, {sum(len(d) for d in documents):,} characters")


def wordnet(root):
    """One document per lexicographer file (noun.animal, verb.motion, ...): each synset as 'its words: its gloss'.
    Layout of data.pos lines (wndb(5WN)): offset lex_filenum ss_type w_cnt(hex) [word lex_id]... p_cnt ... | gloss."""
    base = root / "wordnet-base/usr/share/wordnet"
    groups = defaultdict(list)
    for pos in ("noun", "verb", "adj", "adv"):
        for line in open(base / f"data.{pos}", encoding="utf-8"):
            if line.startswith("  ") or " | " not in line:  # the license header lines start with two spaces
                continue
            fields, gloss = line.rstrip("\n").split(" | ", 1)
            parts = fields.split()
            count = int(parts[3], 16)
            words = [re.sub(r"\([a-z]+\)$", "", w).replace("_", " ") for w in parts[4:4 + 2 * count:2]]
            groups[int(parts[1])].append(f"{', '.join(words)}: {gloss.strip()}")
    return ["\n".join(lines) for _, lines in sorted(groups.items())]


def kjv(root):
    """One document per book; lines look like 'Ge1:1 In the beginning ...' (bible -f, pretty-printing off)."""
    books = {}
    for line in open(root / "kjv.txt", encoding="utf-8"):
        m = re.match(r"(\d?[A-Za-z]+)\d+:\d+ (.*)", line)
        if m:
            books.setdefault(m.group(1), []).append(m.group(2).strip())
    return [" ".join(verses) for verses in books.values()]


def sword_entries(folder):
    """The entries of a SWORD zText/zCom module, in order, grouped by compressed block (BlockType=BOOK: one block a
    book). Layout (SWORD's zverse.cpp): NT/OT.bzs = (offset, size, uncompressed size) u32 triples of the zlib blocks
    in .bzz; .bzv = (block u32, offset u32, size u16) per verse, several verses pointing at one linked entry."""
    books = []
    for testament in ("ot", "nt"):
        bzs = (folder / f"{testament}.bzs").read_bytes()
        bzv = (folder / f"{testament}.bzv").read_bytes()
        bzz = (folder / f"{testament}.bzz").read_bytes()
        blocks = [struct.unpack_from("<III", bzs, i) for i in range(0, len(bzs), 12)]
        texts, seen, order = {}, set(), {}
        for i in range(0, len(bzv), 10):
            block, offset, size = struct.unpack_from("<IIH", bzv, i)
            if size == 0 or (block, offset) in seen:
                continue
            seen.add((block, offset))
            if block not in texts:
                start, length, _ = blocks[block]
                texts[block] = zlib.decompress(bzz[start:start + length])
            order.setdefault(block, []).append(texts[block][offset:offset + size].decode("utf-8"))
        books.extend(order.values())
    return books


def osis_text(entries):
    """OSIS markup to plain text: footnotes dropped, titles, paragraphs, lines and table rows on lines of their own."""
    text = " ".join(entries)
    text = re.sub(r"<note\b.*?</note>", "", text, flags=re.S)
    text = re.sub(r"<(title|row|l|lb|lg|item)\b[^>]*/?>|</(title|row)>|<div\b[^>]*/>", "\n", text)
    text = re.sub(r"<[^>]+>", "", text)
    lines = (re.sub(r"\s+", " ", line).strip() for line in text.split("\n"))
    return re.sub(r"\n{3,}", "\n\n", "\n".join(lines)).strip()


def sword(root, package, module):
    return [osis_text(book) for book in sword_entries(root / package / "usr/share/sword/modules" / module)]


def paragraphs(text):
    """Blank-line-separated paragraphs, each reflowed onto one line."""
    return [re.sub(r"\s+", " ", p).strip() for p in re.split(r"\n\s*\n", text) if p.strip()]


def devil(root):
    """One document per initial letter. The .dict.dz is gzip (dictzip); devil.index lines are
    'headword<TAB>offset<TAB>length', offset and length in dictd's base64 digits."""
    digits = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
    b64 = lambda s: sum(digits.index(c) * 64 ** i for i, c in enumerate(reversed(s)))
    base = root / "dict-devil/usr/share/dictd"
    data = gzip.open(base / "devil.dict.dz").read()
    groups = defaultdict(list)
    for line in open(base / "devil.index", encoding="utf-8"):
        word, offset, length = line.rstrip("\n").split("\t")
        if word.startswith("00-database"):
            continue
        entry = data[b64(offset):b64(offset) + b64(length)].decode("utf-8")
        groups[word[:1].upper()].append("\n".join(paragraphs(entry)))
    return ["\n\n".join(entries) for _, entries in sorted(groups.items())]


def jargon(root, per_document=150):
    """The Jargon File's text from its introduction on, in documents of 150 paragraphs; the tables of contents (runs
    of three or more one-line headword paragraphs) are left out."""
    text = gzip.open(root / "jargon-text/usr/share/doc/jargon-text/jargon.txt.gz").read().decode("utf-8")
    kept, run = [], []
    for p in paragraphs(text[text.index("Welcome to the Jargon File", text.index("Welcome to the Jargon File") + 1):]):
        if len(p.split()) <= 4 and not p.endswith("."):
            run.append(p)
            continue
        if len(run) < 3:
            kept.extend(run)
        run = []
        kept.append(p)
    return ["\n".join(kept[i:i + per_document]) for i in range(0, len(kept), per_document)]


def main():
    if len(sys.argv) != 3:
        sys.exit("usage: corpus-jsonl.py ROOT OUTDIR")
    root, out = Path(sys.argv[1]), Path(sys.argv[2])
    out.mkdir(parents=True, exist_ok=True)
    write(out / "wordnet.jsonl", wordnet(root))
    write(out / "kjv.jsonl", kjv(root))
    write(out / "web.jsonl", sword(root, "sword-text-web", "texts/ztext/engWEB2015eb"))
    write(out / "mhcc.jsonl", sword(root, "sword-comm-mhcc", "comments/zcom/mhcc"))
    write(out / "devil.jsonl", devil(root))
    write(out / "jargon.jsonl", jargon(root))


if __name__ == "__main__":
    try:
        main()
    except (FileNotFoundError, KeyError, ValueError, struct.error, zlib.error) as e:
        sys.exit(f"corpus-jsonl: a package's files are not laid out as this script reads them ({e}).")
