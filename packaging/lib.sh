# Shared by build-deb and build-rpm (sourced, not run).

# Debian's own tools and Python (/usr/bin/python3), not a python3 found first
# on PATH (pyenv, venv): dh-python and rpmbuild expect the system one.
PATH=/usr/sbin:/usr/bin:/sbin:/bin
export PATH

# The version in pyproject.toml ([project] version = "...").
project_version() {
	/usr/bin/python3 - "$1/pyproject.toml" <<'PY'
import re, sys
text = open(sys.argv[1], encoding="utf-8").read()
m = re.search(r'^\[project\][^\[]*?^version\s*=\s*"([^"]+)"', text, re.M | re.S)
if not m:
    sys.exit("pyproject.toml: no [project] version")
print(m.group(1))
PY
}

# Copy what the packages are built from (not tests, not .git) to $2.
copy_source() {
	mkdir -p "$2"
	for item in pyproject.toml README.md LICENSE enforcer bpf policies docs packaging; do
		if [ -e "$1/$item" ]; then
			cp -r "$1/$item" "$2/"
		fi
	done
	find "$2" \( -name __pycache__ -o -name '*.egg-info' \) -prune -exec rm -rf {} +
}
