"""comad.repo: the checkout's root and the git revision that provenance records carry."""
import subprocess

from comad.repo import REPO_ROOT, git_dirty, git_revision


def _git(cwd, *args):
    subprocess.run(["git", "-C", str(cwd), *args], check=True, capture_output=True)


def test_revision_and_dirty_of_a_checkout(tmp_path):
    _git(tmp_path, "init", "-q")
    (tmp_path / "a.txt").write_text("1")
    _git(tmp_path, "add", "a.txt")
    _git(tmp_path, "-c", "user.email=t@t", "-c", "user.name=t", "commit", "-qm", "one")
    head = subprocess.run(["git", "-C", str(tmp_path), "rev-parse", "HEAD"], capture_output=True, text=True).stdout.strip()
    assert git_revision(tmp_path) == head == git_revision(tmp_path, mark_dirty=True) and git_dirty(tmp_path) is False
    (tmp_path / "a.txt").write_text("2")  # a tracked file changed
    assert git_dirty(tmp_path) is True and git_revision(tmp_path, mark_dirty=True) == head + "-dirty"
    assert git_revision(tmp_path) == head  # without mark_dirty: the bare revision


def test_outside_a_checkout_and_the_root(tmp_path):
    assert git_revision(tmp_path) == "unknown" and git_dirty(tmp_path) is None
    assert (REPO_ROOT / "comad" / "repo.py").is_file() and (REPO_ROOT / "benchmark_configs").is_dir()
