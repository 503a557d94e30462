"""Pieces of the registry-free image build that need no engine."""

from __future__ import annotations

from jupyter_reactbox.image import host_apt_mirror, split_tag


def test_host_apt_mirror_reads_deb822_and_one_line_sources(tmp_path):
    d = tmp_path / "sources.list.d"
    d.mkdir()
    (d / "debian.sources").write_text(
        "Types: deb\nURIs: http://mirror.invalid/debian-security\nSuites: bookworm-security\n\n"
        "Types: deb\nURIs: http://mirror.invalid/debian\nSuites: bookworm\n"
    )
    assert host_apt_mirror(tmp_path) == "http://mirror.invalid/debian"
    (d / "debian.sources").unlink()
    (tmp_path / "sources.list").write_text(
        "# comment\ndeb [arch=amd64] http://other.invalid/debian bookworm main\n"
    )
    assert host_apt_mirror(tmp_path) == "http://other.invalid/debian"
    (tmp_path / "sources.list").unlink()
    assert host_apt_mirror(tmp_path) is None


def test_split_tag():
    assert split_tag("jupyter-reactbox-sandbox:0.1.0") == ("jupyter-reactbox-sandbox", "0.1.0")
    assert split_tag("registry.invalid:5000/sandbox") == ("registry.invalid:5000/sandbox", "latest")
    assert split_tag("sandbox") == ("sandbox", "latest")
