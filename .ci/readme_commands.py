"""Prints the README's set-up commands, one per line: the first line of each ```bash block
under the "## Set up" heading. CI runs exactly these, so the README cannot drift from CI."""

import re
import sys

text = open(sys.argv[1], encoding="utf-8").read()
section = text.split("\n## Set up", 1)[1].split("\n## ", 1)[0]
for block in re.findall(r"```bash\n(.*?)```", section, flags=re.S):
    print(block.strip().splitlines()[0])
