"""The operator's pages stay true to the repository: every relative link
resolves, every top-level pillar key is documented, the README stays short
and its two set-up commands are Makefile targets that .ci/run reaches."""

import glob
import os
import re

import pytest

import ipsec_plan

REPO = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
PAGES = [os.path.join(REPO, "README.md")] + sorted(glob.glob(os.path.join(REPO, "docs", "*.md")))
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")


def read(path):
    with open(path, encoding="utf-8") as handle:
        return handle.read()


def slug(heading):
    """GitHub's anchor of a heading."""
    text = re.sub(r"[^\w\- ]", "", heading.strip().lower())
    return text.replace(" ", "-")


@pytest.mark.parametrize("page", PAGES, ids=lambda p: os.path.relpath(p, REPO))
def test_every_relative_link_resolves(page):
    text = read(page)
    broken = []
    for target in LINK.findall(text):
        if re.match(r"[a-z]+:", target):
            continue
        path, _, anchor = target.partition("#")
        resolved = os.path.normpath(os.path.join(os.path.dirname(page), path)) if path else page
        if not os.path.exists(resolved) or not resolved.startswith(REPO + os.sep):
            broken.append(target)
        elif anchor:
            headings = [slug(h) for h in re.findall(r"^#+ (.*)$", read(resolved), re.M)]
            if anchor not in headings:
                broken.append(target)
    assert not broken, broken


def test_every_top_level_pillar_key_is_in_the_pillar_reference():
    text = read(os.path.join(REPO, "docs", "pillar.md"))
    missing = [key for key in sorted(ipsec_plan.KNOWN_KEYS[""]) if "`{}".format(key) not in text]
    assert not missing, missing


def test_readme_is_an_operators_page_with_the_two_commands():
    readme = read(os.path.join(REPO, "README.md"))
    assert len(readme.splitlines()) <= 250
    commands = re.findall(r"^make (\w+)\s+#", readme, re.M)
    assert commands[:2] == ["demo", "test"], commands
    makefile = read(os.path.join(REPO, "Makefile"))
    for target in ("demo", "test"):
        assert re.search(r"^{}:".format(target), makefile, re.M), target
    assert re.search(r"^make test$", read(os.path.join(REPO, ".ci", "run")), re.M)


def test_pages_name_no_file_outside_the_repository():
    # Paths written in backquotes that look like the repository's own
    # (a top-level folder of it) must exist.
    tops = {name for name in os.listdir(REPO) if not name.startswith(".")}
    missing = []
    for page in PAGES:
        for path in re.findall(r"`((?:ipsec|_modules|_states|_utils|_beacons|_pillar|test|tools|bench|docs)"
                               r"/[\w./-]+\.(?:py|sls|md|jinja|sh))`", read(page)):
            if path.split("/")[0] in tops and not os.path.exists(os.path.join(REPO, path)):
                missing.append((os.path.relpath(page, REPO), path))
    assert not missing, missing
