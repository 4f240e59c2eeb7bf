#!/bin/sh
# The Python text example (python/examples/text_dfm.py) at a small size: a torch.nn transformer
# trained through dfm.Trainer on Debian's fortunes. Checks that libdfm's generalized-KL gradient,
# back-propagated through the network, equals torch's own gradient of the same loss (--check:
# loss to 1e-4, every parameter's gradient to 1e-4 of the largest entry), that 40 steps lower the
# training loss by more than 1 bit per character (6.3 -> 4.6 measured), that the held-out
# negative ELBO is below log2(97) = 6.6 bits (a network that learned nothing), and that the
# program ends with its result: line. Skipped (with the reason) without torch or the corpus.
set -eu
PYTHON=${PYTHON:-python3}
if ! out=$("$PYTHON" -c "import torch" 2>&1); then
    echo "skipped: torch is not importable by $PYTHON ($(echo "$out" | tail -1)); Debian: python3-torch"
    exit 0
fi
[ -d /usr/share/games/fortunes ] || { echo "skipped: /usr/share/games/fortunes missing (Debian: fortunes)"; exit 0; }
[ -r /usr/share/dict/words ] || { echo "skipped: /usr/share/dict/words missing (Debian: wamerican)"; exit 0; }
out=$(OMP_WAIT_POLICY=PASSIVE "$PYTHON" python/examples/text_dfm.py --steps 40 --seq-len 32 \
      --width 32 --layers 1 --batch 16 --samples 4 --sample-steps 8 --eval-windows 16 \
      --elbo-times 2 --threads 1 --check 2>&1) || { echo "$out" | tail -20; exit 1; }
echo "$out" | grep -q '^check: ' || { echo "no gradient check line"; echo "$out"; exit 1; }
res=$(echo "$out" | grep '^result: ') || { echo "no result: line"; echo "$out"; exit 1; }
first=$(echo "$out" | sed -n 's/.*loss_first=\([0-9.]*\).*/\1/p')
last=$(echo "$res" | sed -n 's/.*loss_last=\([0-9.]*\).*/\1/p')
nelbo=$(echo "$res" | sed -n 's/.*nelbo_bpc=\([0-9.]*\).*/\1/p')
awk -v f="$first" -v l="$last" -v n="$nelbo" 'BEGIN {
    if (!(l < f - 1.0)) { printf "training loss %s -> %s: did not fall by 1 bit\n", f, l; exit 1 }
    if (!(n < 6.0)) { printf "held-out negative ELBO %s bits/char: not below 6.0\n", n; exit 1 }
}' || { echo "$out"; exit 1; }
echo "$res"
