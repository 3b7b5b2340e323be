"""The interface ships zh-hans and en: the Chinese catalogue is complete and compiled."""

import gettext
import re
from pathlib import Path

from django.conf import settings
from django.utils import translation

LOCALE_DIR = Path(settings.BASE_DIR) / "locale" / "zh_Hans" / "LC_MESSAGES"


def po_entries() -> dict[str, str]:
    text = (LOCALE_DIR / "django.po").read_text(encoding="utf-8")
    entries = {}
    for block in text.split("\n\n"):
        if "#, fuzzy" in block and 'msgid ""\nmsgstr ""\n"Project' not in block:
            raise AssertionError(f"fuzzy translation left in django.po:\n{block}")
        msgid = "".join(re.findall(r'^(?:msgid|")\s*"?(.*)"$', block.split("msgstr")[0].split("msgid_plural")[0], re.M))
        msgstrs = re.findall(r'^msgstr(?:\[\d\])? "(.*)"((?:\n".*")*)', block, re.M)
        if msgid:
            entries[msgid] = "".join(a + "".join(re.findall(r'"(.*)"', b)) for a, b in msgstrs)
    return entries


def test_every_string_has_a_chinese_translation():
    untranslated = [msgid for msgid, msgstr in po_entries().items() if not msgstr]
    assert untranslated == []


def test_compiled_catalogue_matches_the_po_file():
    with open(LOCALE_DIR / "django.mo", "rb") as handle:
        catalogue = gettext.GNUTranslations(handle)
    assert len(po_entries()) == len([k for k in catalogue._catalog if k]), "run `make messages` after editing django.po"


def test_interface_strings_switch_language():
    with translation.override("zh-hans"):
        assert translation.gettext("Sign in") == "登录"
    with translation.override("en"):
        assert translation.gettext("Sign in") == "Sign in"
