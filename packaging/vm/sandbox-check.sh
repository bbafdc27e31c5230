#!/bin/sh
# Try enforcer.service's sandbox under a real systemd in the test VM.
#
# Runs INSIDE a virtme-ng guest (as root). From the repo root, after
# packaging/build-deb:
#   mkdir -p /tmp/sbx/variants && printf '[Service]\n' > /tmp/sbx/variants/1-as-shipped.conf
#   PATH=$PWD/.venv/bin:$PATH vng --run /boot/vmlinuz-<Debian stock> --disable-kvm --force-9p \
#     --memory 2G --cpus 2 --rwdir /tmp/sbx -- "/bin/sh $PWD/packaging/vm/sandbox-check.sh /tmp/sbx $PWD/dist/enforcer_<version>_all.deb"
# then read /tmp/sbx/var.log. Each variants/*.conf is a drop-in (e.g. one that
# relaxes or adds a directive); each is started, checked (READY, SysRq write
# denied, reload, stop exit 0 with pins kept) and unloaded in turn.
#
# systemd runs as PID 1 of its own PID namespace (virtme-ng's --systemd mode
# did not come up); the .deb goes into a tmpfs overlay on /usr.
OUT=${1:?results dir}
DEB=${2:?path of the .deb}
exec > $OUT/var.log 2>&1
mkdir -p /run/ov && mount -t tmpfs tmpfs /run/ov && mkdir /run/ov/u /run/ov/w
mount -t overlay overlay -o lowerdir=/usr,upperdir=/run/ov/u,workdir=/run/ov/w /usr
rm -f /var/lib/man-db/auto-update
dpkg -i "$DEB" >/dev/null
sed -i 's/^ENFORCER_MODE=.*/ENFORCER_MODE=enforce/' /etc/default/enforcer
D=/etc/systemd/system/enforcer.service.d; mkdir -p $D /run/sbx
printf '[Service]\nStandardOutput=append:/run/sbx/stdout.log\nStandardError=append:/run/sbx/stderr.log\n' > $D/test.conf
printf '[Unit]\nDescription=enforcer sandbox test\n' > /etc/systemd/system/enforcer-test.target
mount -t securityfs securityfs /sys/kernel/security 2>/dev/null
mount -t bpf bpf /sys/fs/bpf 2>/dev/null
unshare --pid --fork --mount-proc env container=vmtest /lib/systemd/systemd --unit=enforcer-test.target --log-target=kmsg >/dev/null 2>&1 &
sleep 5
for i in $(seq 1 60); do SYSPID=$(ps -eo pid,args | awk '$2=="/lib/systemd/systemd"{print $1}'); [ -n "$SYSPID" ] && break; sleep 1; done
SYSPID=$(ps -eo pid,args | awk '$2=="/lib/systemd/systemd"{print $1}')
sc() { nsenter -t $SYSPID -m -p systemctl "$@"; }
for i in $(seq 1 120); do out=$(sc is-system-running 2>/dev/null); [ -n "$out" ] && break; sleep 1; done
echo "systemd: $(sc is-system-running 2>&1)"
sysrq() { python3 -c '
import os
try:
    os.close(os.open("/proc/sysrq-trigger", os.O_WRONLY)); print("sysrq: open allowed")
except OSError as e: print("sysrq:", e)'; }
for v in $OUT/variants/*.conf; do
  echo "=== variant $(basename $v)"; cat $v
  cp $v $D/zz-variant.conf
  : > /run/sbx/stderr.log; : > /run/sbx/stdout.log
  sc daemon-reload
  t0=$(date +%s)
  sc start --no-block enforcer.service
  for i in $(seq 1 200); do
    st=$(sc show -p ActiveState -p SubState --value enforcer.service | tr '\n' ' ')
    case "$st" in active*|failed*|*auto-restart*) break;; esac
    sleep 2
  done
  echo "RESULT $(basename $v): $st after $(( $(date +%s) - t0 )) s"
  sc show enforcer.service -p ExecMainStatus -p StatusText
  tail -c 1500 /run/sbx/stderr.log; head -c 600 /run/sbx/stdout.log
  sysrq
  ls /sys/fs/bpf/enforcer/ 2>&1; ls -la /run/enforcer/ 2>&1 | tail -2
  case "$st" in active*)
    sc reload enforcer.service; sleep 5; echo "after reload: $(sc is-active enforcer.service)"
    sc stop enforcer.service; sc show enforcer.service -p ExecMainStatus -p Result
    echo "pins after stop: $(ls /sys/fs/bpf/enforcer/)"; sysrq;;
  *) sc stop enforcer.service;;
  esac
  sc reset-failed enforcer.service 2>/dev/null
  /usr/bin/enforcer unload; sleep 1
done
nsenter -t $SYSPID -m -p systemd-analyze security enforcer.service --no-pager 2>&1 | tail -40
echo ALLDONE
