"""The real instrument material the corpus is made from (shared/DATA.md: training sources only).

Everything here is found on disk: Debian packages installed by scripts/install.sh, the music21
score corpus from PyPI, and emoji and icon artwork that `streamrec data sources --fetch` takes from the npm
registry at install time. Nothing is downloaded while building.
"""

from __future__ import annotations

import json
import logging
import os
import subprocess
import tarfile
import xml.etree.ElementTree as ET
from dataclasses import dataclass, field
from pathlib import Path

log = logging.getLogger(__name__)

FLUID_R3 = Path("/usr/share/sounds/sf2/FluidR3_GM.sf2")
MUSESCORE_GENERAL = Path("/usr/share/sounds/sf3/MuseScore_General.sf3")
HYDROGEN_KITS = Path("/usr/share/hydrogen/data/drumkits")
OPENCLIPART = Path("/usr/share/openclipart/svg")
LMMS_SAMPLES = Path("/usr/share/lmms/samples/instruments")
# qABCs, a children's alphabet game (Debian qabcs-data): near-photographic drawings of whole instruments,
# unlike the corpus's emoji, clip art and icons, and of cello, clarinet, harmonica and organ too.
QABCS = Path("/usr/share/qabcs/abcs/all/pics/instrument")

# LMMS's one-note recordings of real instruments (Debian lmms-common, usr/share/lmms/samples/instruments), per
# class: a second sample set beside FluidR3's for the classes it has (none for accordion, banjo, clarinet,
# harmonica or saxophone). `data build --recordings-share` plays them the way a plain sampler does
# (audio.render_sampled; off by default: they did not gain on field-dev). Field-dev takes two noise beds from
# the same package (train/corpus/field.py), never these files.
LMMS_INSTRUMENTS: dict[str, tuple[str, ...]] = {
    "cello": ("cello01",),
    "flute": ("flute01",),
    "guitar": (
        "steel_guitar01",
        "steel_guitar_slight_distorted01",
        "steel_guitar_medium_distorted01",
        "steel_guitar_heavy_distorted01",
    ),
    "organ": ("church_organ01", "church_organ02", "church_organ03", "church_organ04", "e_organ01"),
    "piano": ("piano01", "piano02"),
    "trumpet": ("trumpet01",),
    "violin": ("violin_fingered01", "violin_double_stop01"),
}

# npm packages of emoji artwork, as (package, version, path of the 64 px PNGs inside the tarball).
# Apple's set is on DATA.md's list but its licence forbids commercial use, so the product leaves it out.
EMOJI_PACKAGES: dict[str, tuple[str, str, str]] = {
    "google": ("emoji-datasource-google", "16.0.0", "package/img/google/64/{cp}.png"),
    "twitter": ("emoji-datasource-twitter", "16.0.0", "package/img/twitter/64/{cp}.png"),
    "facebook": ("emoji-datasource-facebook", "16.0.0", "package/img/facebook/64/{cp}.png"),
    "joypixels": ("emoji-assets", "11.0.0", "package/png/64/{cp}.png"),
}

# Icon sets of the Iconify project (npm @iconify-json/<set>: one JSON of SVG bodies) by other artists than
# field-dev's (train/corpus/field.py) and none on DATA.md's reserved list: set -> (version, licence). They add
# flat, line and monochrome styles of drums, guitar, piano, saxophone, trumpet and violin; no set draws the
# other classes, apart from those already used or held out.
ICON_SETS: dict[str, tuple[str, str]] = {
    "emojione": ("1.2.3", "CC-BY-4.0 (npm @iconify-json/emojione, Emoji One v2)"),
    "emojione-v1": ("1.2.3", "CC-BY-SA-4.0 (npm @iconify-json/emojione-v1, Emoji One v1)"),
    "emojione-monotone": ("1.2.1", "CC-BY-4.0 (npm @iconify-json/emojione-monotone, Emoji One monotone)"),
    "noto-v1": ("1.2.5", "Apache-2.0 (npm @iconify-json/noto-v1, Noto Emoji v1)"),
    "fa6-solid": ("1.2.4", "CC-BY-4.0 (npm @iconify-json/fa6-solid, Font Awesome 6)"),
    "hugeicons": ("1.2.35", "MIT (npm @iconify-json/hugeicons)"),
    "icon-park-outline": ("1.2.4", "Apache-2.0 (npm @iconify-json/icon-park-outline, ByteDance IconPark)"),
    "lucide": ("1.2.137", "ISC (npm @iconify-json/lucide)"),
    "mingcute": ("1.2.8", "Apache-2.0 (npm @iconify-json/mingcute)"),
    "ph": ("1.2.2", "MIT (npm @iconify-json/ph, Phosphor)"),
    "tabler": ("1.2.41", "MIT (npm @iconify-json/tabler)"),
    "tdesign": ("1.2.19", "MIT (npm @iconify-json/tdesign)"),
}

LICENCES: dict[str, str] = {
    "fluid-soundfont-gm": "MIT (Debian fluid-soundfont-gm, FluidR3_GM.sf2)",
    "musescore-general-soundfont": "MIT (Debian musescore-general-soundfont, MuseScore_General.sf3)",
    "hydrogen-drumkits": "GPL-2+ (Debian hydrogen-drumkits)",
    "lmms-common": "GPL-2+ (Debian lmms-common): one-note instrument recordings, played as a sampler",
    "music21": "BSD-3-Clause (music21 corpus, PyPI; scores in the public domain)",
    "emoji-google": "Apache-2.0 (npm emoji-datasource-google, Noto Emoji)",
    "emoji-twitter": "CC-BY-4.0 (npm emoji-datasource-twitter, Twemoji)",
    "emoji-facebook": "unclear: no licence stated for the artwork (npm emoji-datasource-facebook)",
    "emoji-joypixels": "JoyPixels Free License, attribution required (npm emoji-assets)",
    "openclipart": "public domain, CC0 (Debian openclipart-svg)",
    "qabcs": "GPL-3+ (Debian qabcs-data, qABCs by DanSoft): realistic instrument drawings",
    "procedural": "drawn by streamrec's own code (train/corpus/images.py), MIT",
    "generated": "phrases, chords and drum patterns generated by streamrec's own code, MIT",
    "espeak-ng": "GPL-3+ (Debian espeak-ng): synthesized background speech",
    "asterisk-core-sounds-en-wav": "CC-BY-SA-3.0 (Debian asterisk-core-sounds-en-wav): recorded background speech",
    "fillets-ng-data-cs": "GPL-2+ (Debian fillets-ng-data-cs, Fish Fillets NG): recorded background speech",
    "ktuberling-data": "GPL-2+ (Debian ktuberling-data, KTuberling): recorded background speech",
    "fillets-ng-data-nl": "GPL-2+ (Debian fillets-ng-data-nl, Fish Fillets NG): recorded background speech",
    **{f"icons-{name}": licence for name, (_, licence) in ICON_SETS.items()},
}


@dataclass(frozen=True)
class InstrumentSource:
    """How one class sounds and looks: GM programs, pitch range, artwork."""

    programs: tuple[int, ...] = ()  # General MIDI programs, 0-based; empty for drums
    pitch_range: tuple[int, int] = (48, 84)  # MIDI note numbers the instrument plays
    polyphonic: bool = False  # plays chords as well as melodies
    drums: bool = False
    emoji: tuple[str, ...] = ()  # code points, looked up in every EMOJI_PACKAGES style
    clipart: tuple[str, ...] = ()  # paths under OPENCLIPART
    icons: tuple[tuple[str, str], ...] = ()  # (ICON_SETS set, icon name)
    drawings: tuple[str, ...] = ()  # file stems under QABCS
    procedural: str | None = None  # name of a drawing in images.PROCEDURAL_DRAWINGS


_MUSIC = "recreation/music/"
_EMOJI_ICON_SETS = ("emojione", "emojione-v1", "emojione-monotone", "noto-v1")


def _icons(name: str, *icon_sets: str) -> tuple[tuple[str, str], ...]:
    """The icon called `name` in each of these ICON_SETS."""
    return tuple((icon_set, name) for icon_set in icon_sets)


INSTRUMENTS: dict[str, InstrumentSource] = {
    "accordion": InstrumentSource(
        (21,), (53, 84), polyphonic=True, emoji=("1fa97",), drawings=("accordion", "squeezebox")
    ),
    "banjo": InstrumentSource((105,), (50, 81), polyphonic=True, emoji=("1fa95",)),
    "cello": InstrumentSource(
        (42,), (36, 69), clipart=tuple(_MUSIC + n for n in ("cello_ganson.svg", "cello_mo_01.svg", "cello_mo_02.svg"))
    ),
    "clarinet": InstrumentSource(
        (71,), (50, 86), clipart=(_MUSIC + "oboe_ganson.svg",), procedural="clarinet", drawings=("clarinet",)
    ),
    "drums": InstrumentSource(
        drums=True,
        emoji=("1f941", "1fa98"),
        clipart=tuple(
            _MUSIC + n
            for n in (
                "drums_jarno_vasamaa_.svg",
                "war_drum_enrique_meza_c_01.svg",
                "war_drum_enrique_meza_c_02.svg",
                "africandrum_benji_park1.svg",
                "africandrum_benji_park2.svg",
                "africandrum_benji_park_.svg",
                "derbouk_jurgen_01.svg",
                "djambf_ganson.svg",
            )
        ),
        icons=_icons("drum", "emojione", "emojione-monotone", "noto-v1", "fa6-solid", "hugeicons", "lucide"),
        drawings=("drums", "bass_drum"),
    ),
    "flute": InstrumentSource(
        (73,),
        (60, 93),
        emoji=("1fa88",),
        clipart=(_MUSIC + "flute_ganson.svg",),
        drawings=("flute", "western_concert_flute"),
    ),
    "guitar": InstrumentSource(
        tuple(range(24, 31)),
        (40, 76),
        polyphonic=True,
        emoji=("1f3b8",),
        clipart=tuple(
            _MUSIC + n
            for n in (
                "guitar_ganson.svg",
                "guitar_jarno_vasamaa1.svg",
                "guitar_jarno_vasamaa2.svg",
                "guitar_profile_philippe__01.svg",
                "electric_guitar_andrea__01r.svg",
                "bass_guitar_a.j._ashton_.svg",
            )
        ),
        icons=_icons(
            "guitar",
            "emojione",
            "emojione-v1",
            "emojione-monotone",
            "noto-v1",
            "fa6-solid",
            "hugeicons",
            "lucide",
            "ph",
        )
        + (("mingcute", "guitar-line"), ("mingcute", "guitar-fill"), ("ph", "guitar-fill"))
        + (("tdesign", "guitar"), ("tdesign", "guitar-filled")),
        drawings=("guitar", "electric_guitar"),
    ),
    "harmonica": InstrumentSource((22,), (60, 84), procedural="harmonica", drawings=("harmonica",)),
    "organ": InstrumentSource(tuple(range(16, 21)), (36, 84), polyphonic=True, procedural="organ", drawings=("organ",)),
    "piano": InstrumentSource(
        tuple(range(0, 8)),
        (36, 96),
        polyphonic=True,
        emoji=("1f3b9",),
        clipart=(
            _MUSIC + "piano_geraint_luff_01.svg",
            _MUSIC + "piano_keys_jonathan_diet_01.svg",
            "computer/icons/flat-theme/action/piano.svg",
        ),
        icons=_icons("piano", "icon-park-outline", "lucide", "tabler", "tdesign")
        + (("lucide", "keyboard-music"), ("ph", "piano-keys"), ("ph", "piano-keys-fill"), ("tdesign", "piano-filled")),
        drawings=("piano", "grand_piano"),
    ),
    "saxophone": InstrumentSource(
        tuple(range(64, 68)),
        (44, 80),
        emoji=("1f3b7",),
        clipart=(_MUSIC + "saxophone_jarno_vasamaa_.svg", _MUSIC + "jazz_enrique_meza_c_01.svg"),
        icons=_icons("saxophone", *_EMOJI_ICON_SETS),
        drawings=("saxophone",),
    ),
    "trumpet": InstrumentSource(
        (56,),
        (54, 82),
        emoji=("1f3ba",),
        clipart=tuple(
            _MUSIC + n
            for n in (
                "trumpet_b_flat__ganson.svg",
                "trumpet_b_flat_colour_ganso.svg",
                "trumpet_pocket__ganson.svg",
                "trumpet_pocket_colour_ganso.svg",
                "trumpet_herald__ganson.svg",
                "tpt_cubf_ganson.svg",
            )
        ),
        icons=_icons("trumpet", *_EMOJI_ICON_SETS),
        drawings=("trumpet",),
    ),
    "violin": InstrumentSource(
        (40,),
        (55, 96),
        emoji=("1f3bb",),
        clipart=tuple(_MUSIC + n for n in ("violin_ganson.svg", "violin_colour_ganson.svg", "violin_mo_01.svg")),
        icons=_icons("violin", *_EMOJI_ICON_SETS),
        drawings=("violin",),
    ),
}

# General MIDI drum kits (bank 128) in FluidR3: standard, room, power, electronic, TR-808, jazz, brush, orchestra.
GM_DRUM_KITS: tuple[int, ...] = (0, 8, 16, 24, 25, 32, 40, 48)


def cache_dir() -> Path:
    """Where streamrec keeps fetched artwork, parsed melodies and decoded clips."""
    root = os.environ.get("STREAMREC_CACHE") or os.path.join(
        os.environ.get("XDG_CACHE_HOME", os.path.expanduser("~/.cache")), "streamrec"
    )
    return Path(root)


def emoji_dir() -> Path:
    return cache_dir() / "sources" / "emoji"


# Recorded speech for the "no instrument" training windows (train/background.py); never in a field-dev set:
# (Debian package, folder, files). The Asterisk prompts are one speaker's telephone-band words and phrases;
# the Fish Fillets NG dialogues are full-band Czech voice acting by several actors. The network fine-tuned
# with the prompts alone took 87-93 % of unseen speakers' prompts for "no instrument", but only 47 % of
# the dialogues' windows: full-band speech was what it had not heard (docs/results.md). KTuberling's words
# (1376 files) add many more voices, men's, women's and children's, in 25 languages; the Dutch dialogues of Fish
# Fillets NG, other actors in the same full-band dialogue style as the Czech ones.
SPEECH_RECORDINGS = (
    ("asterisk-core-sounds-en-wav", Path("/usr/share/asterisk/sounds/en_US_f_Allison"), "*.wav"),
    ("fillets-ng-data-cs", Path("/usr/share/games/fillets-ng/sound"), "*/cs/*.ogg"),
    ("fillets-ng-data-nl", Path("/usr/share/games/fillets-ng/sound"), "*/nl/*.ogg"),
    ("ktuberling-data", Path("/usr/share/ktuberling/sounds"), "*/*.ogg"),
)


def recorded_speech() -> list[Path]:
    """The recorded speech of SPEECH_RECORDINGS present on this machine, sorted."""
    return sorted(path for _, root, pattern in SPEECH_RECORDINGS if root.is_dir() for path in root.glob(pattern))


def field_dir() -> Path:
    """Where `streamrec data field-dev` keeps the held-out material it fetched (train/corpus/field.py);
    $STREAMREC_FIELD_SOURCES points it at a copy made elsewhere (an offline machine, the tests' stand-ins)."""
    return Path(os.environ.get("STREAMREC_FIELD_SOURCES") or cache_dir() / "sources" / "field")


def field_icon_dir() -> Path:
    return field_dir() / "icons"


def icon_dir() -> Path:
    return cache_dir() / "sources" / "icons"


def icon_set_file(icon_set: str) -> Path:
    """The fetched JSON of an Iconify set: a training one (ICON_SETS) or a field-dev one."""
    return (icon_dir() if icon_set in ICON_SETS else field_icon_dir()) / f"{icon_set}.json"


def soundfonts() -> list[Path]:
    """The training soundfonts present on this machine (MuseScore General reuses many FluidR3 samples)."""
    return [p for p in (FLUID_R3, MUSESCORE_GENERAL) if p.exists()]


def lmms_samples() -> dict[str, tuple[Path, ...]]:
    """Per class, the LMMS instrument recordings present on this machine (LMMS_INSTRUMENTS)."""
    found = {c: tuple(LMMS_SAMPLES / f"{stem}.ogg" for stem in stems) for c, stems in LMMS_INSTRUMENTS.items()}
    return {c: tuple(p for p in paths if p.exists()) for c, paths in found.items() if any(p.exists() for p in paths)}


@dataclass(frozen=True)
class DrumKit:
    """A Hydrogen drum kit: sample files by role (kick, snare, hat, open_hat, tom, crash, ride)."""

    name: str
    samples: dict[str, tuple[Path, ...]] = field(default_factory=dict)


_ROLE_WORDS = (  # first match wins: "open hat" before "hat", "tom" before others
    ("open_hat", ("open",)),
    ("kick", ("kick", "bass drum", "bd", "bassdrum")),
    ("snare", ("snare", "sd", "rim")),
    ("hat", ("hat", "hh")),
    ("tom", ("tom",)),
    ("crash", ("crash", "china", "splash")),
    ("ride", ("ride", "bell")),
)


def _role(name: str) -> str | None:
    lowered = name.lower()
    for role, words in _ROLE_WORDS:
        if any(w in lowered.split() or lowered.startswith(w) or f" {w}" in lowered for w in words):
            return role
    return None


def hydrogen_kits(root: Path = HYDROGEN_KITS) -> list[DrumKit]:
    """Parses every drumkit.xml under root; keeps kits with at least a kick, a snare and a hat."""
    kits = []
    for xml_path in sorted(root.glob("*/drumkit.xml")):
        try:
            root = ET.parse(xml_path).getroot()
        except ET.ParseError as e:
            log.warning("ignoring drum kit %s: %s", xml_path, e)
            continue
        ns = root.tag.split("}")[0] + "}" if root.tag.startswith("{") else ""
        by_role: dict[str, list[Path]] = {}
        for instrument in root.iter(f"{ns}instrument"):
            role = _role(instrument.findtext(f"{ns}name", ""))
            files = [xml_path.parent / f.text for f in instrument.iter(f"{ns}filename") if f.text]
            files = [f for f in files if f.exists()]
            if role and files:
                by_role.setdefault(role, []).extend(files[:1])  # the first layer: one velocity is enough
        if {"kick", "snare", "hat"} <= by_role.keys():
            kits.append(DrumKit(xml_path.parent.name, {r: tuple(f) for r, f in by_role.items()}))
    return kits


def fetch_emoji(dest: Path | None = None) -> dict[str, int]:
    """Takes the emoji packages from the npm registry (`npm pack`) and keeps only the glyphs we use.

    Returns the number of glyphs per style. Already fetched styles are skipped.
    """
    dest = dest or emoji_dir()
    wanted = sorted({cp for spec in INSTRUMENTS.values() for cp in spec.emoji})
    counts = {}
    for style, (package, version, member) in EMOJI_PACKAGES.items():
        style_dir = dest / style
        if all((style_dir / f"{cp}.png").exists() for cp in wanted):
            counts[style] = len(wanted)
            continue
        style_dir.mkdir(parents=True, exist_ok=True)
        tarball = _npm_pack(package, version, dest / "_npm")
        names = {member.format(cp=cp): cp for cp in wanted}
        with tarfile.open(tarball, "r:gz") as archive:
            for info in archive:
                if info.name in names:
                    data = archive.extractfile(info).read()  # type: ignore[union-attr]
                    (style_dir / f"{names[info.name]}.png").write_bytes(data)
        tarball.unlink()
        counts[style] = sum((style_dir / f"{cp}.png").exists() for cp in wanted)
    return counts


def _npm_pack(package: str, version: str, work: Path) -> Path:
    """Takes one package from the npm registry with its own client; returns the tarball's path."""
    work.mkdir(parents=True, exist_ok=True)
    done = subprocess.run(["npm", "pack", "--silent", f"{package}@{version}"], cwd=work, capture_output=True, text=True)
    if done.returncode != 0:
        raise RuntimeError(f"npm pack {package}@{version} failed: {done.stderr.strip()[-300:]}")
    return work / done.stdout.strip().splitlines()[-1]


def fetch_icons(dest: Path | None = None) -> dict[str, int]:
    """Takes the ICON_SETS from the npm registry and keeps only the icons INSTRUMENTS uses, one JSON per set in
    Iconify's format. Returns the number of icons per set; sets already fetched are skipped."""
    dest = dest or icon_dir()
    counts = {}
    for icon_set, (version, _) in ICON_SETS.items():
        wanted = sorted({name for spec in INSTRUMENTS.values() for s, name in spec.icons if s == icon_set})
        path = dest / f"{icon_set}.json"
        if path.exists() and set(wanted) <= json.loads(path.read_text(encoding="utf-8"))["icons"].keys():
            counts[icon_set] = len(wanted)
            continue
        tarball = _npm_pack(f"@iconify-json/{icon_set}", version, dest / "_npm")
        with tarfile.open(tarball, "r:gz") as archive:
            data = json.load(archive.extractfile("package/icons.json"))  # type: ignore[arg-type]
        tarball.unlink()
        kept = {k: v for k, v in data.items() if k not in ("icons", "aliases")}
        kept["icons"] = {name: data["icons"][name] for name in wanted if name in data["icons"]}
        path.write_text(json.dumps(kept, indent=1) + "\n", encoding="utf-8")
        counts[icon_set] = len(kept["icons"])
    return counts


def emoji_images(codepoint: str) -> list[tuple[str, Path]]:
    """(style, png path) for every fetched style that has this glyph."""
    found = []
    for style in EMOJI_PACKAGES:
        path = emoji_dir() / style / f"{codepoint}.png"
        if path.exists():
            found.append((style, path))
    return found


def check_sources() -> list[str]:
    """Names what is missing, as sentences; empty when everything needed to build is present."""
    problems = []
    if not soundfonts():
        problems.append(f"no training soundfont ({FLUID_R3}): install Debian fluid-soundfont-gm")
    if not HYDROGEN_KITS.exists():
        problems.append(f"no Hydrogen drum kits in {HYDROGEN_KITS}: install Debian hydrogen-drumkits")
    if not OPENCLIPART.exists():
        problems.append(f"no openclipart drawings in {OPENCLIPART}: install Debian openclipart-svg")
    for tool in ("fluidsynth", "ffmpeg", "espeak-ng"):
        if not any((Path(d) / tool).exists() for d in os.environ.get("PATH", "").split(os.pathsep)):
            problems.append(f"{tool} not found on PATH: install Debian {tool}")
    if not any(emoji_images(cp) for cp in ("1f3bb",)) or not all(icon_set_file(s).exists() for s in ICON_SETS):
        problems.append(
            "emoji and icon artwork not fetched: run `streamrec data sources --fetch` (scripts/install.sh does)"
        )
    return problems
