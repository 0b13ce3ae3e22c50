#!/usr/bin/env python3
"""Fill a Maildir with realistic, deterministic test messages, and check a fetch of them.

Used by scripts/demo and scripts/bench to give a POP3 server (Dovecot) something to serve,
and to prove that popsync delivered every message byte for byte. Standard library only.

  gen-mail.py MAILDIR --count N [--sizes mixed|small|fixed:SIZE] [--seed S] [--clear]
      write N messages into MAILDIR/new (MAILDIR/cur and tmp are created if missing)
  gen-mail.py MAILDIR --add K
      K more messages ("new mail arrived"), continuing the same sequence and size mix
  gen-mail.py MAILDIR --verify FETCHED
      check that the Maildir FETCHED (popsync's) holds exactly the delivered form of every
      message ever generated into MAILDIR, no more, no fewer; exit 1 with an explanation if not.
      FETCHED may also be an mbox file (mboxrd; read with Python's mailbox module)
  gen-mail.py MAILDIR --expected DIR
      write the delivered form of every generated message into DIR (one file each)

The delivered form is what a POP3 client must write into a Maildir: CRLF line ends become
LF, and a final newline is added where the stored message had none (POP3 cannot transmit its
absence).

Message number i depends only on (seed, i, size mix): the same command gives the same bytes
on every machine. MAILDIR/gen-mail.json records the seed and the batches written so that
--add, --verify and --expected need no other options; --verify works even after the server
has deleted the messages.

Size mixes: "mixed" (default) - mostly a few KB, median about 8 KB, a long tail, and about
one message in 200 with a 1-5 MB attachment; "small" - 2-4 KB each; "fixed:SIZE" - every
message about SIZE bytes (K, M, G suffixes: fixed:50M).

What is in the messages: Received/Date/From/To/Message-ID headers, RFC 2047 subjects and
names (B and Q encodings; Japanese, emoji, accented Latin), folded headers; plain ASCII,
8-bit UTF-8 and 8-bit ISO-8859-1 bodies (not valid UTF-8), quoted-printable,
multipart/alternative, multipart/mixed with base64 attachments; body lines that begin with
".", "..", "From " and ">From " (POP3 dot-stuffing, mbox quoting); about 10% stored with CRLF
line ends and about 1% without a final newline.

File names carry the sizes (",S=<bytes>,W=<bytes with CRLF line ends>") so Dovecot reports
exact POP3 sizes without reading the files. As root, files are given to --owner UID:GID
(default: the owner of MAILDIR), as a mail server's files would be.
"""

import argparse
import base64
import collections
import hashlib
import json
import math
import os
import random
import re
import statistics
import sys

MANIFEST = "gen-mail.json"
HOST = "gen-mail.popsync.test"
EPOCH = 1_735_689_600  # 2025-01-01T00:00:00Z: dates advance from here, one message a minute

# --------------------------------------------------------------------------------------------
# Vocabulary

WORDS = """account after again agenda all also answer archive attached available back backup
before below budget build calendar call change check client could customer data deadline
delivery draft during each early email error every expected feedback file final find first
follow forward from good great have help here holiday important include invoice issue item
just know last later let like list look mail make meeting message minutes month more morning
need network next note office order other over payment plan please point possible price
project quarter question quick receipt regards release reminder report request review right
running schedule send server service should since soon status still summary support sure
team thanks that their there these thing think this through ticket time today tomorrow
update urgent version week what when which while will with work would year your""".split()

JAPANESE = ["会議の議事録", "来週の予定について", "請求書を添付します", "よろしくお願いします",
            "新しいサーバーへの移行", "お疲れ様です", "確認をお願いします", "東京オフィス"]
EMOJI = ["\U0001F389", "\U0001F4EC", "\U0001F680", "\u2705", "\U0001F525", "\U0001F600",
         "\U0001F4CE", "\U0001F980", "\u2615", "\U0001F338"]
ACCENTED = ["Café", "Grüße", "naïve", "Zürich", "señor", "Ærøskøbing", "façade", "Øresund",
            "crème brûlée", "Łódź"]
PEOPLE = [("Alice Martin", "alice@example.org"), ("Bob Okafor", "bob@example.net"),
          ("Carla Gómez", "carla@example.es"), ("山田 太郎", "taro.yamada@example.jp"),
          ("Dmitri Ivanov", "dmitri@example.com"), ("Émilie Laurent", "emilie@example.fr"),
          ("Build Server", "ci-noreply@builds.example.com"), ("Frances O'Brien", "frances@example.ie"),
          ("Support Desk", "support@helpdesk.example.com"), ("Günther Weiß", "g.weiss@example.de")]
MAILING_LISTS = ["dev.lists.example.org", "announce.example.net", "users.lists.example.com"]
ATTACHMENTS = [("application/pdf", "invoice-2025-01.pdf"), ("image/jpeg", "IMG_2041.jpg"),
               ("image/png", "screenshot.png"), ("application/zip", "logs.zip"),
               ("application/vnd.openxmlformats-officedocument.spreadsheetml.sheet", "budget.xlsx"),
               ("application/octet-stream", "backup.tar.gz")]
# Lines that trip up POP3 dot-stuffing and mbox "From " quoting.
TRICKY_LINES = [".", "..", "...", ".hidden", ". a dot and a space", "..two dots",
                "From the desk of the release manager:", "From ", ">From a quoted line",
                ">>From twice quoted", " .space first", "From: looks like a header"]

LATIN1_TEXT = ["Ça coûte 10 F, garçon.", "Über die Straße gehen.", "Año nuevo, vida nueva.",
               "Smörgåsbord på Söder.", "Ørsted og Æblegrød."]


# --------------------------------------------------------------------------------------------
# Building blocks

def parse_size(text):
    text = text.strip().upper()
    mult = 1
    if text and text[-1] in "KMG":
        mult = {"K": 1024, "M": 1024 ** 2, "G": 1024 ** 3}[text[-1]]
        text = text[:-1]
    value = int(float(text) * mult)
    if value <= 0:
        raise ValueError("size must be positive")
    return value


def check_sizes(spec):
    if spec in ("mixed", "small"):
        return spec
    if spec.startswith("fixed:"):
        parse_size(spec[len("fixed:"):])
        return spec
    raise argparse.ArgumentTypeError("expected mixed, small or fixed:SIZE (e.g. fixed:50M), not %r" % spec)


def encoded_word_b(text):
    return "=?UTF-8?B?%s?=" % base64.b64encode(text.encode()).decode()


def encoded_word_q(text):
    out = []
    for byte in text.encode():
        ch = chr(byte)
        if ch == " ":
            out.append("_")
        elif byte < 128 and ch.isalnum():
            out.append(ch)
        else:
            out.append("=%02X" % byte)
    return "=?UTF-8?Q?%s?=" % "".join(out)


def fold(name, value, width=76):
    """A header field, folded at spaces so lines stay under `width` (RFC 5322 2.2.3)."""
    lines, line = [], name + ":"
    for token in value.split(" "):
        if len(line) + 1 + len(token) > width and line != name + ":":
            lines.append(line)
            line = " " + token
        else:
            line += " " + token
    lines.append(line)
    return "\n".join(lines)


def mailbox(rng, person=None):
    name, addr = person or rng.choice(PEOPLE)
    if any(ord(c) > 127 for c in name):
        name = encoded_word_b(name) if rng.random() < 0.5 else encoded_word_q(name)
    elif "'" in name:
        name = '"%s"' % name
    return "%s <%s>" % (name, addr)


def sentence(rng):
    words = [rng.choice(WORDS) for _ in range(rng.randint(5, 15))]
    words[0] = words[0].capitalize()
    return " ".join(words) + rng.choice(".....?!")


def wrapped(text, width=72):
    lines, line = [], ""
    for word in text.split(" "):
        if line and len(line) + 1 + len(word) > width:
            lines.append(line)
            line = word
        else:
            line = line + " " + word if line else word
    if line:
        lines.append(line)
    return lines


def prose(rng, nbytes, flavour="ascii"):
    """Paragraphs of about `nbytes` bytes (a line more at most), as a list of str lines, with
    the occasional tricky line."""
    lines, size = [], 0
    while size < nbytes:
        para = " ".join(sentence(rng) for _ in range(rng.randint(1, 5)))
        if flavour == "utf8":
            para += " %s %s %s" % (rng.choice(JAPANESE), rng.choice(EMOJI), rng.choice(ACCENTED))
        elif flavour == "latin1":
            para += " " + rng.choice(LATIN1_TEXT)
        para_lines = wrapped(para)
        if rng.random() < 0.3:
            para_lines.insert(rng.randint(0, len(para_lines)), rng.choice(TRICKY_LINES))
        for line in para_lines + [""]:
            if size >= nbytes:
                break
            lines.append(line)
            size += len(line.encode()) + 1
    return lines


def quoted_printable(lines):
    out = []
    for line in lines:
        enc = "".join(chr(b) if 32 <= b <= 126 and b != 61 else "=%02X" % b for b in line.encode())
        if enc.endswith(" "):
            enc = enc[:-1] + "=20"
        while len(enc) > 76:
            cut = 75
            while "=" in enc[cut - 2:cut]:
                cut -= 1
            out.append(enc[:cut] + "=")
            enc = enc[cut:]
        out.append(enc)
    return out


def html_from(lines):
    paras, cur = [], []
    for line in lines + [""]:
        if line:
            cur.append(line.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))
        elif cur:
            paras.append("<p>" + " ".join(cur) + "</p>")
            cur = []
    html = '<html><head><meta charset="utf-8"></head><body>' + "".join(paras) + "</body></html>"
    # HTML mail often comes in very long lines; keep some that way, wrap others.
    return [html] if len(html) < 4000 else wrapped(html, 998)


def subject(rng, i):
    base = sentence(rng)[:-1][:58]
    r = rng.random()
    if r < 0.5:
        text = base
    elif r < 0.62:
        text = "Re: " + base
    elif r < 0.74:
        text = encoded_word_b("%s %s" % (rng.choice(JAPANESE), rng.choice(JAPANESE)))
    elif r < 0.84:
        text = encoded_word_q("%s %s" % (rng.choice(ACCENTED), base[:30]))
    elif r < 0.93:
        text = encoded_word_b("%s %s %s" % (rng.choice(EMOJI), base[:36], rng.choice(EMOJI)))
    else:  # long: several encoded words and plain text, folded over lines
        text = " ".join([encoded_word_b(rng.choice(JAPANESE)) for _ in range(3)] + [base, base])
    return "%s [#%d]" % (text, i)


def rfc5322_date(ts):
    days = ["Mon", "Tue", "Wed", "Thu", "Fri", "Sat", "Sun"]
    months = ["Jan", "Feb", "Mar", "Apr", "May", "Jun", "Jul", "Aug", "Sep", "Oct", "Nov", "Dec"]
    # Civil date from days since 1970-01-01 (Howard Hinnant's algorithm), no time module needed.
    z = ts // 86400 + 719468
    era = z // 146097
    doe = z - era * 146097
    yoe = (doe - doe // 1460 + doe // 36524 - doe // 146096) // 365
    doy = doe - (365 * yoe + yoe // 4 - yoe // 100)
    mp = (5 * doy + 2) // 153
    day = doy - (153 * mp + 2) // 5 + 1
    month = mp + 3 if mp < 10 else mp - 9
    year = yoe + era * 400 + (1 if month <= 2 else 0)
    weekday = (ts // 86400 + 3) % 7  # 1970-01-01 was a Thursday
    secs = ts % 86400
    return "%s, %d %s %d %02d:%02d:%02d +0000" % (days[weekday], day, months[month - 1], year,
                                                  secs // 3600, secs // 60 % 60, secs % 60)


def header_block(rng, seed, i, ts, content_lines):
    h = ["Return-Path: <%s>" % rng.choice(PEOPLE)[1]]
    hops = rng.randint(1, 4)
    for hop in range(hops):
        h.append(fold("Received", "from mx%d.example.net (mx%d.example.net [198.51.100.%d]) by "
                                  "mail.example.com (Postfix) with ESMTPS id %09X for "
                                  "<user@example.com>; %s"
                      % (hop, hop, rng.randint(1, 254), rng.getrandbits(36),
                         rfc5322_date(ts - (hops - hop)))))
    h.append("Date: " + rfc5322_date(ts))
    h.append("From: " + mailbox(rng))
    h.append("To: " + mailbox(rng))
    if rng.random() < 0.25:
        h.append(fold("Cc", ", ".join(mailbox(rng) for _ in range(rng.randint(1, 5)))))
    h.append(fold("Subject", subject(rng, i)))
    h.append("Message-ID: <gen.%d.%d@%s>" % (seed, i, HOST))
    if rng.random() < 0.3:
        refs = ["<thread.%d.%d@%s>" % (seed, rng.randrange(10 ** 6), HOST)
                for _ in range(rng.randint(1, 8))]
        h.append("In-Reply-To: " + refs[-1])
        h.append(fold("References", " ".join(refs)))
    if rng.random() < 0.2:
        h.append("List-Id: <%s>" % rng.choice(MAILING_LISTS))
        h.append("List-Unsubscribe: <mailto:leave@%s>" % rng.choice(MAILING_LISTS))
    if rng.random() < 0.5:
        h.append("X-Spam-Score: %.1f" % rng.uniform(-5, 4))
    h.append("MIME-Version: 1.0")
    return h + content_lines


def attachment(rng, nbytes):
    ctype, name = rng.choice(ATTACHMENTS)
    nbytes = max(1, nbytes)
    raw = rng.getrandbits(8 * nbytes).to_bytes(nbytes, "little")  # rng.randbytes, before 3.9
    data = base64.encodebytes(raw).decode().rstrip("\n")
    if rng.random() < 0.25:
        disposition = "attachment; filename*=UTF-8''%E8%AB%8B%E6%B1%82%E6%9B%B8.pdf"
    else:
        disposition = 'attachment; filename="%s"' % name
    return ['Content-Type: %s; name="%s"' % (ctype, name), "Content-Transfer-Encoding: base64",
            "Content-Disposition: " + disposition, ""] + data.split("\n")


# --------------------------------------------------------------------------------------------
# Messages

def target_size(seed, sizes, i):
    rng = random.Random("size/%d/%s/%d" % (seed, sizes, i))
    if sizes == "small":
        return rng.randint(2048, 4000)
    if sizes.startswith("fixed:"):
        return parse_size(sizes[len("fixed:"):])
    # mixed: one message in every 200 (at a random place) carries a 1-5 MB attachment; the
    # rest are log-normal around 8 KB, between 1.5 KB and 400 KB
    if i % 200 == random.Random("big/%d/%d" % (seed, i // 200)).randrange(200):
        return rng.randint(1 << 20, 5 << 20)
    return int(min(max(8000 * math.exp(0.9 * rng.gauss(0, 1)), 1500), 400_000))


def message(seed, sizes, i):
    """Message number i of a generated set, as the bytes stored on the server, and its date."""
    target = target_size(seed, sizes, i)
    rng = random.Random("message/%d/%d" % (seed, i))
    ts = EPOCH + 60 * i
    r = rng.random()
    if target > 100_000:
        kind = "attachment"
    elif r < 0.30:
        kind = "ascii"
    elif r < 0.42:
        kind = "utf8"
    elif r < 0.47:
        kind = "latin1"
    elif r < 0.55:
        kind = "qp"
    elif r < 0.80 or target < 6000:
        kind = "alternative"
    else:
        kind = "attachment"
    boundary = "=_%s_%016x" % (kind[:3], rng.getrandbits(64))
    head = {
        "ascii": ["Content-Type: text/plain; charset=us-ascii", "Content-Transfer-Encoding: 7bit"],
        "utf8": ["Content-Type: text/plain; charset=UTF-8; format=flowed",
                 "Content-Transfer-Encoding: 8bit"],
        "latin1": ["Content-Type: text/plain; charset=ISO-8859-1", "Content-Transfer-Encoding: 8bit"],
        "qp": ["Content-Type: text/plain; charset=UTF-8", "Content-Transfer-Encoding: quoted-printable"],
        "alternative": ['Content-Type: multipart/alternative; boundary="%s"' % boundary],
        "attachment": ['Content-Type: multipart/mixed; boundary="%s"' % boundary],
    }[kind]
    header = "\n".join(header_block(rng, seed, i, ts, head)).encode()
    room = max(100, target - len(header) - 2)  # what is left for the body

    encoding = "utf-8"
    if kind in ("ascii", "utf8"):
        body = prose(rng, room, kind)
    elif kind == "latin1":
        body = prose(rng, room, "latin1")
        encoding = "latin-1"  # 8-bit bytes that are not valid UTF-8
    elif kind == "qp":
        body = quoted_printable(prose(rng, room * 3 // 4, "utf8")) + ["", ".", "From the QP side"]
    elif kind == "alternative":
        text = prose(rng, max(50, room // 2 - 150))
        body = (["This is a multi-part message in MIME format.", "", "--" + boundary,
                 "Content-Type: text/plain; charset=us-ascii", ""] + text +
                ["--" + boundary, "Content-Type: text/html; charset=UTF-8",
                 "Content-Transfer-Encoding: 8bit", ""] + html_from(text) +
                ["", "--%s--" % boundary])
    else:
        text = prose(rng, min(1500, room // 4), "utf8")
        b64_room = max(100, room - sum(len(line.encode()) + 1 for line in text) - 400)
        body = (["This is a multi-part message in MIME format.", "", "--" + boundary,
                 "Content-Type: text/plain; charset=UTF-8", "Content-Transfer-Encoding: 8bit", ""] +
                text + ["--" + boundary] + attachment(rng, b64_room * 57 // 77) +
                ["--%s--" % boundary])
    data = header + b"\n\n" + "\n".join(body).encode(encoding) + b"\n"
    # Line ends and the final newline, from their own stream so that sizes do not shift.
    v = random.Random("eol/%d/%d" % (seed, i)).random()
    if v < 0.10:
        data = data.replace(b"\n", b"\r\n")
    elif v < 0.11:
        data = data.rstrip(b"\n")
    return data, ts


def delivered(data):
    """What a POP3 client writes into a Maildir for a stored message."""
    out = data.replace(b"\r\n", b"\n")
    if not out.endswith(b"\n"):
        out += b"\n"
    return out


def wire_size(data):
    """The size POP3 LIST reports: every line end counted as CRLF."""
    return len(data) + data.count(b"\n") - data.count(b"\r\n")


# --------------------------------------------------------------------------------------------
# The manifest: what has been generated into a Maildir

def read_manifest(maildir):
    path = os.path.join(maildir, MANIFEST)
    try:
        with open(path) as f:
            return json.load(f)
    except FileNotFoundError:
        return None


def write_manifest(maildir, manifest, owner):
    path = os.path.join(maildir, MANIFEST)
    tmp = path + ".tmp"
    with open(tmp, "w") as f:
        json.dump(manifest, f, indent=1)
        f.write("\n")
    if owner:
        os.chown(tmp, *owner)
    os.replace(tmp, path)


def generated(manifest):
    """(index, bytes) of every message the manifest records, in order."""
    for batch in manifest["batches"]:
        for i in range(batch["start"], batch["start"] + batch["count"]):
            yield i, message(manifest["seed"], batch["sizes"], i)[0]


# --------------------------------------------------------------------------------------------
# Commands

def fail(text):
    print("gen-mail: " + text, file=sys.stderr)
    sys.exit(1)


def cmd_generate(args, maildir):
    for sub in ("cur", "new", "tmp"):
        os.makedirs(os.path.join(maildir, sub), exist_ok=True)
    owner = None
    if os.geteuid() == 0:
        if args.owner:
            owner = tuple(int(x) for x in args.owner.split(":"))
        else:
            st = os.stat(maildir)
            owner = (st.st_uid, st.st_gid)
    manifest = read_manifest(maildir)
    if args.clear:
        for sub in ("cur", "new", "tmp"):
            d = os.path.join(maildir, sub)
            for name in os.listdir(d):
                os.unlink(os.path.join(d, name))
        for name in os.listdir(maildir):  # Dovecot's index and uidlist describe the old mail
            if name.startswith("dovecot") and os.path.isfile(os.path.join(maildir, name)):
                os.unlink(os.path.join(maildir, name))
        manifest = None
    if args.add:
        if manifest is None:
            fail("%s has no %s: create the messages with --count first" % (maildir, MANIFEST))
        count = args.add
        sizes = args.sizes or manifest["batches"][-1]["sizes"]
        if args.seed is not None and args.seed != manifest["seed"]:
            fail("%s was generated with --seed %d" % (maildir, manifest["seed"]))
    else:
        if manifest is not None and manifest["batches"]:
            fail("%s already holds generated messages: use --add K, or --clear to start over" % maildir)
        count = args.count
        sizes = args.sizes or "mixed"
        manifest = {"seed": args.seed if args.seed is not None else 1, "next": 0, "batches": []}
    start = manifest["next"]
    seed = manifest["seed"]
    lengths = []
    for i in range(start, start + count):
        data, ts = message(seed, sizes, i)
        name = "%d.M%dP%d.%s,S=%d,W=%d" % (ts, i, seed, HOST, len(data), wire_size(data))
        tmp = os.path.join(maildir, "tmp", name)
        with open(tmp, "wb") as f:
            f.write(data)
        if owner:
            os.chown(tmp, *owner)
        os.utime(tmp, (ts, ts))
        os.rename(tmp, os.path.join(maildir, "new", name))
        lengths.append(len(data))
    manifest["batches"].append({"sizes": sizes, "start": start, "count": count})
    manifest["next"] = start + count
    write_manifest(maildir, manifest, owner)
    if not args.quiet and lengths:
        print("%d message%s (%s) into %s: %.1f MB, median %.1f KB, largest %.1f MB"
              % (count, "" if count == 1 else "s", sizes, maildir, sum(lengths) / 1e6,
                 statistics.median(lengths) / 1e3, max(lengths) / 1e6))


def cmd_expected(manifest, outdir):
    os.makedirs(outdir, exist_ok=True)
    n = 0
    for i, data in generated(manifest):
        with open(os.path.join(outdir, "%08d.eml" % i), "wb") as f:
            f.write(delivered(data))
        n += 1
    print("%d expected messages written to %s" % (n, outdir))


def message_id(data):
    m = re.search(rb"^Message-ID: <([^>]*)>", data[:65536], re.M | re.I)
    return m.group(1).decode("ascii", "replace") if m else None


def first_difference(a, b):
    n = min(len(a), len(b))
    for k in range(0, n, 4096):
        if a[k:k + 4096] != b[k:k + 4096]:
            for j in range(k, min(k + 4096, n)):
                if a[j] != b[j]:
                    return j
    return n


def cmd_verify(manifest, fetched, quiet):
    want = collections.Counter()
    by_id = {}
    total_bytes = 0
    for i, data in generated(manifest):
        d = delivered(data)
        h = hashlib.sha256(d).digest()
        want[h] += 1
        by_id["gen.%d.%d@%s" % (manifest["seed"], i, HOST)] = (i, h)
        total_bytes += len(d)
    problems = []
    got = collections.Counter()
    files = {}
    if os.path.isfile(fetched):
        # An mbox (mboxrd): Python's mailbox module splits it; the quoting is undone here.
        import mailbox
        box = mailbox.mbox(fetched, create=False)
        for key in box.iterkeys():
            data = re.sub(rb"(?m)^>(>*From )", rb"\1", box.get_bytes(key))
            h = hashlib.sha256(data).digest()
            got[h] += 1
            files.setdefault(h, (fetched + " message %d" % key, data))
    else:
        leftovers = os.listdir(os.path.join(fetched, "tmp")) if os.path.isdir(os.path.join(fetched, "tmp")) else []
        if leftovers:
            problems.append("%d file(s) left in %s/tmp (a complete fetch leaves none): %s"
                            % (len(leftovers), fetched, ", ".join(sorted(leftovers)[:3])))
        for sub in ("new", "cur"):
            d = os.path.join(fetched, sub)
            if not os.path.isdir(d):
                continue
            for name in os.listdir(d):
                path = os.path.join(d, name)
                with open(path, "rb") as f:
                    data = f.read()
                h = hashlib.sha256(data).digest()
                got[h] += 1
                files.setdefault(h, (path, None))
    n_want, n_got = sum(want.values()), sum(got.values())
    missing = want - got
    extra = got - want
    if missing or extra:
        problems.append("%s holds %d messages; %d expected (%d missing or damaged, %d unexpected)"
                        % (fetched, n_got, n_want, sum(missing.values()), sum(extra.values())))
        index_of = {h: i for i, h in by_id.values()}
        for h in list(missing)[:5]:
            problems.append("  missing: message #%d" % index_of[h])
        for h in list(extra)[:5]:
            path, data = files[h]
            if data is None:
                with open(path, "rb") as f:
                    data = f.read()
            mid = message_id(data)
            if mid in by_id:
                i = by_id[mid][0]
                sizes = next(b["sizes"] for b in manifest["batches"]
                             if b["start"] <= i < b["start"] + b["count"])
                want_bytes = delivered(message(manifest["seed"], sizes, i)[0])
                at = first_difference(data, want_bytes)
                if data == want_bytes:
                    note = "a duplicate of message #%d" % i
                else:
                    note = ("message #%d, but %d bytes instead of %d; first difference at byte %d: "
                            "got %r, expected %r" % (i, len(data), len(want_bytes), at,
                                                     data[max(0, at - 20):at + 20],
                                                     want_bytes[max(0, at - 20):at + 20]))
            else:
                note = "not a generated message (%d bytes, starts %r)" % (len(data), data[:60])
            problems.append("  unexpected: %s: %s" % (path, note))
    if problems:
        print("gen-mail: VERIFY FAILED\n" + "\n".join(problems), file=sys.stderr)
        sys.exit(1)
    if not quiet:
        print("verified: %d messages, %.1f MB, byte for byte" % (n_got, total_bytes / 1e6))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0],
                                 epilog=__doc__.split("\n\n", 1)[1],
                                 formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("maildir", metavar="MAILDIR", help="the server-side Maildir to fill")
    what = ap.add_mutually_exclusive_group(required=True)
    what.add_argument("--count", "-n", type=int, metavar="N", help="generate N messages")
    what.add_argument("--add", type=int, metavar="K", help="generate K more messages")
    what.add_argument("--verify", metavar="FETCHED", help="check a fetched Maildir (or mbox file) against what was generated")
    what.add_argument("--expected", metavar="DIR", help="write the delivered form of every message into DIR")
    ap.add_argument("--sizes", type=check_sizes, help="mixed (default), small, or fixed:SIZE")
    ap.add_argument("--seed", type=int, help="a different seed gives different messages (default 1)")
    ap.add_argument("--clear", action="store_true", help="empty MAILDIR (and Dovecot's index) first")
    ap.add_argument("--owner", metavar="UID:GID", help="as root: owner of the files (default: MAILDIR's)")
    ap.add_argument("--quiet", "-q", action="store_true", help="print only errors")
    args = ap.parse_args()
    maildir = args.maildir.rstrip("/") or "/"
    if args.count is not None or args.add is not None:
        if (args.count if args.count is not None else args.add) < 0:
            fail("the number of messages cannot be negative")
        cmd_generate(args, maildir)
        return
    manifest = read_manifest(maildir)
    if manifest is None:
        fail("%s has no %s: was it filled by gen-mail.py?" % (maildir, MANIFEST))
    if args.verify:
        cmd_verify(manifest, args.verify, args.quiet)
    else:
        cmd_expected(manifest, args.expected)


if __name__ == "__main__":
    main()
