#!/bin/sh
# Add HistoViewer to the desktop's application menu (desktop entry + hicolor icons).
#
#   install.sh                 the app bundle this script sits in (HistoViewer/desktop/),
#                              or else the `histoviewer` command of a pip install
#   install.sh --bundle DIR    the unpacked app bundle DIR (holding the HistoViewer program)
#   install.sh --prefix DIR    install under DIR/share instead of ~/.local/share
#                              (e.g. /usr/local, as root, for every user)
#   install.sh --uninstall     remove what an earlier run added (same --prefix)
#
# The bundle is not copied: the menu entry starts it where it is, so unpack it where it
# should stay (e.g. ~/Applications/HistoViewer or /opt/HistoViewer) before running this.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
prefix="${XDG_DATA_HOME:-$HOME/.local/share}"
prefix_given=""
bundle=""
uninstall=""

while [ $# -gt 0 ]; do
    case "$1" in
        --bundle) bundle="$2"; shift 2 ;;
        --prefix) prefix="$2/share"; prefix_given=1; shift 2 ;;
        --uninstall) uninstall=1; shift ;;
        -h|--help) awk 'NR > 1 && !/^#/ { exit } NR > 1 { sub(/^# ?/, ""); print }' "$0"; exit 0 ;;
        *) echo "install.sh: unknown option $1 (see --help)" >&2; exit 2 ;;
    esac
done

applications="$prefix/applications"
icons="$prefix/icons/hicolor"

refresh() {
    # Menus and icon caches pick the change up sooner; missing tools are not an error.
    if command -v update-desktop-database >/dev/null 2>&1; then
        update-desktop-database -q "$applications" || true
    fi
    if command -v gtk-update-icon-cache >/dev/null 2>&1 && [ -f "$icons/index.theme" ]; then
        gtk-update-icon-cache -q -t -f "$icons" || true
    fi
}

if [ -n "$uninstall" ]; then
    rm -f "$applications/histoviewer.desktop"
    rm -f "$icons"/*/apps/histoviewer.png "$icons/scalable/apps/histoviewer.svg"
    refresh
    echo "Removed HistoViewer from the menu under $prefix."
    exit 0
fi

# The files this script installs: beside it in a bundle, in the source tree otherwise.
desktop="$here/histoviewer.desktop"
png_icons=""
for candidate in "$here/icons/hicolor" "$here/../icons/hicolor"; do
    if [ -d "$candidate" ]; then png_icons=$(cd "$candidate" && pwd); break; fi
done
svg_icon=""
for candidate in "$here/icons/histoviewer.svg" "$here/../../resources/icons/histoviewer.svg"; do
    if [ -f "$candidate" ]; then svg_icon="$candidate"; break; fi
done
if [ ! -f "$desktop" ] || [ -z "$png_icons" ]; then
    echo "install.sh: histoviewer.desktop or the icons are missing beside $0" >&2
    exit 1
fi

if [ -z "$bundle" ] && [ -x "$here/../HistoViewer" ] && [ -d "$here/../_internal" ]; then
    bundle="$here/.."
fi
if [ -n "$bundle" ]; then
    bundle=$(cd "$bundle" && pwd)
    program="$bundle/HistoViewer"
    if [ ! -x "$program" ]; then
        echo "install.sh: $bundle holds no HistoViewer program (is it the unpacked bundle?)" >&2
        exit 1
    fi
else
    program=$(command -v histoviewer || true)
    if [ -z "$program" ]; then
        echo "install.sh: no bundle given and no 'histoviewer' command on PATH" \
             "(pip install histoviewer first, or pass --bundle DIR)" >&2
        exit 1
    fi
fi

mkdir -p "$applications"
for folder in "$png_icons"/*x*; do
    size=$(basename "$folder")
    mkdir -p "$icons/$size/apps"
    cp "$folder/apps/histoviewer.png" "$icons/$size/apps/histoviewer.png"
done
if [ -n "$svg_icon" ]; then
    mkdir -p "$icons/scalable/apps"
    cp "$svg_icon" "$icons/scalable/apps/histoviewer.svg"
fi
# Menus do not search PATH reliably (and ~/.local/bin may not be on it): name the program
# by its full path. Quoted, as the desktop entry spec asks, for paths with spaces.
sed -e "s|^Exec=histoviewer |Exec=\"$program\" |" -e "s|^TryExec=histoviewer\$|TryExec=$program|" \
    "$desktop" > "$applications/histoviewer.desktop"
chmod 644 "$applications/histoviewer.desktop"
refresh

echo "HistoViewer is in the application menu (entry: $applications/histoviewer.desktop)."
echo "It starts $program"
if [ -z "$prefix_given" ] && [ -n "$bundle" ]; then
    echo "For a 'histoviewer' command in a terminal: ln -s \"$program\" ~/.local/bin/histoviewer"
fi
