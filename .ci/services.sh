# Sourced by .ci/run (as root, on Debian) before the tests: installs and starts what the
# scale-out tests need. Idempotent: a second run only checks. Exports:
#   OMPI_ALLOW_RUN_AS_ROOT(_CONFIRM)  OpenMPI refuses root without them
#   FASTOPTIM_TEST_POSTGRES_URL       a database the search tests share (they start their own
#                                     server when it is unset)
# Apt: openmpi-bin libopenmpi-dev postgresql. Pip: mpi4py psycopg2-binary dask[distributed].

export DEBIAN_FRONTEND=noninteractive
_fo_missing=""
for _fo_pkg in openmpi-bin libopenmpi-dev postgresql; do
  dpkg -s "$_fo_pkg" >/dev/null 2>&1 || _fo_missing="$_fo_missing $_fo_pkg"
done
if [ -n "$_fo_missing" ]; then
  apt-get update -qq
  # shellcheck disable=SC2086  # one word per package
  apt-get install -y -qq --no-install-recommends $_fo_missing >/dev/null
fi

python3 -c "import mpi4py, psycopg2, distributed" 2>/dev/null ||
  python3 -m pip install --quiet mpi4py psycopg2-binary "dask[distributed]"

export OMPI_ALLOW_RUN_AS_ROOT=1 OMPI_ALLOW_RUN_AS_ROOT_CONFIRM=1
# MPI and its launcher on loopback only (CI machines may have interfaces that do not route)
export OMPI_MCA_btl_tcp_if_include=lo OMPI_MCA_oob_tcp_if_include=lo

# A PostgreSQL cluster (Debian's newest installed version), started, with a test database.
_fo_ver=$(ls /usr/lib/postgresql | sort -V | tail -n 1)
if ! pg_lsclusters -h | awk -v v="$_fo_ver" '$1 == v && $2 == "main"' | grep -q .; then
  pg_createcluster "$_fo_ver" main >/dev/null
fi
if ! pg_lsclusters -h | awk -v v="$_fo_ver" '$1 == v && $2 == "main" && $4 == "online"' |
    grep -q .; then
  pg_ctlcluster "$_fo_ver" main start
fi
_fo_port=$(pg_lsclusters -h | awk -v v="$_fo_ver" '$1 == v && $2 == "main" {print $3}')
_fo_psql() { runuser -u postgres -- psql -p "$_fo_port" -v ON_ERROR_STOP=1 -qtAc "$1"; }
if [ "$(_fo_psql "SELECT 1 FROM pg_roles WHERE rolname = 'fastoptim'")" != "1" ]; then
  _fo_psql "CREATE ROLE fastoptim LOGIN PASSWORD 'fastoptim'"
fi
if [ "$(_fo_psql "SELECT 1 FROM pg_database WHERE datname = 'fastoptim_test'")" != "1" ]; then
  _fo_psql "CREATE DATABASE fastoptim_test OWNER fastoptim"
fi
export FASTOPTIM_TEST_POSTGRES_URL="postgresql://fastoptim:fastoptim@127.0.0.1:${_fo_port}/fastoptim_test"
unset _fo_missing _fo_pkg _fo_ver _fo_port
unset -f _fo_psql
