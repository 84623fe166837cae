"""Side environments that see the active one (a leaf: standard library only).

`python -m venv --system-site-packages` exposes the *base* interpreter's packages, which inside a virtualenv
are not the ones in use. `inherit_active_env` instead adds the site-packages folders of the interpreter that
runs this code (its virtualenv's, where it runs in one) after the new venv's own, with their .pth files
(editable installs), so the side environment shadows only what it installs itself.
"""
from __future__ import annotations

import site
import subprocess
import sys
from pathlib import Path


def active_site_dirs() -> list[str]:
    """The site-packages folders of the running interpreter, in sys.path order."""
    dirs = [p for p in sys.path if p and Path(p).name in ("site-packages", "dist-packages")]
    if site.ENABLE_USER_SITE and Path(site.getusersitepackages()).is_dir():
        dirs.append(site.getusersitepackages())
    return list(dict.fromkeys(str(Path(d).resolve()) for d in dirs))


PTH = "zz-bilm-active-env.pth"  # zz: processed after the venv's own .pth files


def _pth_text() -> str:
    return "\n".join(f"import site; site.addsitedir({d!r})" for d in active_site_dirs()) + "\n"


def _own_site(venv: Path) -> Path:
    code = "import sysconfig; print(sysconfig.get_paths()['purelib'])"
    own = subprocess.run([str(venv / "bin" / "python"), "-c", code], capture_output=True, text=True, check=True)
    return Path(own.stdout.strip())


def inherit_active_env(venv: Path) -> None:
    """Make `venv` see the active site dirs after its own (a .pth file in its site-packages)."""
    (_own_site(venv) / PTH).write_text(_pth_text(), encoding="utf-8")


def inherits_active_env(site_packages: Path) -> bool:
    """Whether a venv (its site-packages folder) was made to see the environment that runs this code."""
    path = site_packages / PTH
    return path.is_file() and path.read_text(encoding="utf-8") == _pth_text()
