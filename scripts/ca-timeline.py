#!/usr/bin/env python3
"""Draws docs/ca-lifecycle.svg: two root rotations on the default schedule.

Defaults (see docs/ca-lifecycle.md): a root lives 365 days and is replaced 90 days before
its end; the next root is published 24 hours before it signs; the old root stays in the
bundle for the longest leaf lifetime after it stops signing; signing intermediates live 7
days and are renewed after 3.5. The picture is to scale in days, except that the short
steps (24 h propagation, 24 h retention) are widened so they can be seen.

Usage: python3 scripts/ca-timeline.py > docs/ca-lifecycle.svg
"""

VALIDITY, ROTATE_BEFORE = 365, 90
W, LEFT, DAY = 960, 150, 2.0  # pixels per day
STEP = 14  # drawn width of a one-day step


def x(day):
    return LEFT + day * DAY


def bar(y, start, end, fill, label):
    return (
        f'<rect x="{x(start):.1f}" y="{y}" width="{(end - start) * DAY:.1f}" height="22" '
        f'rx="3" fill="{fill}"/>'
        f'<text x="{x(start) + 6:.1f}" y="{y + 15}" font-size="12" fill="#fff">{label}</text>'
    )


def marker(day, y0, y1, text, color):
    return (
        f'<line x1="{x(day):.1f}" y1="{y0}" x2="{x(day):.1f}" y2="{y1}" stroke="{color}" '
        f'stroke-dasharray="4 3"/>'
        f'<text x="{x(day) + 3:.1f}" y="{y0 - 4}" font-size="11" fill="{color}">{text}</text>'
    )


def main():
    out = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{W}" height="330" '
        'font-family="sans-serif">',
        '<rect width="100%" height="100%" fill="#fff"/>',
        '<text x="10" y="22" font-size="15" font-weight="bold">'
        "podcert-signer CA lifecycle (default schedule, days)</text>",
    ]
    rows = {"root A": 70, "root B": 110, "bundle": 200, "signing": 250}
    for name, y in rows.items():
        out.append(f'<text x="10" y="{y + 15}" font-size="13">{name}</text>')
    prepare_b = VALIDITY - ROTATE_BEFORE  # 275
    activate_b = prepare_b + STEP / DAY
    retire_a = activate_b + STEP / DAY
    out.append(bar(rows["root A"], activate_b, VALIDITY, "#c5d3e8", ""))
    out.append(bar(rows["root A"], 0, activate_b, "#4a6fa5", "root A signs intermediates"))
    out.append(
        f'<text x="{x(activate_b) + 4:.1f}" y="{rows["root A"] + 36}" font-size="11">'
        "still valid, signs nothing, key dropped</text>"
    )
    out.append(bar(rows["root B"], prepare_b, activate_b, "#b5c99a", ""))
    out.append(bar(rows["root B"], activate_b, 400, "#6b8e23", "root B signs"))
    # Bundle contents.
    out.append(bar(rows["bundle"], 0, prepare_b, "#888", "bundle: A"))
    out.append(bar(rows["bundle"], prepare_b, retire_a, "#555", "A+B"))
    out.append(bar(rows["bundle"], retire_a, 400, "#888", "bundle: B"))
    # Intermediates: one per 3.5 days, drawn as ticks.
    day = 0.0
    while day < 400:
        color = "#4a6fa5" if day < activate_b else "#6b8e23"
        out.append(
            f'<rect x="{x(day):.1f}" y="{rows["signing"]}" width="{7 * DAY - 1:.1f}" '
            f'height="10" fill="{color}" opacity="0.6"/>'
        )
        day += 3.5
    out.append(
        f'<text x="{LEFT}" y="{rows["signing"] + 28}" font-size="11">'
        "a signing intermediate per term, renewed half-way (7 days, every 3.5); in memory only</text>"
    )
    out.append(marker(prepare_b, 62, 280, "prepare B", "#b03030"))
    out.append(marker(activate_b, 102, 280, "activate B (+24h)", "#b03030"))
    out.append(marker(retire_a, 190, 280, "retire A (+longest leaf)", "#b03030"))
    for d in range(0, 401, 50):
        out.append(
            f'<text x="{x(d):.1f}" y="315" font-size="11" text-anchor="middle">{d}</text>'
        )
    out.append(
        f'<line x1="{x(0)}" y1="300" x2="{x(400)}" y2="300" stroke="#000"/>'
    )
    out.append("</svg>")
    print("\n".join(out))


if __name__ == "__main__":
    main()
