"""The certificate page's "Install on…" chooser: the platforms, the file each one imports, and which one to
show first (``?platform=``, else a guess from the browser's User-Agent header; ``static/portal/install.js``
refines the guess in the browser, e.g. an iPad that says it is a Mac).

The portal never has the private key, so every platform but the command line imports a PKCS#12 (.p12) file
that the person makes: in the browser (the key generator's key, ``static/portal/p12.js``) or with OpenSSL
from the certificate-with-chain download. macOS Keychain, iOS and Android read only the legacy
encryption (3DES, SHA-1); Windows 10 (1709) and later, Firefox and Chrome's store on Linux read the modern
one (AES-256, PBKDF2) that OpenSSL 3 makes by default.
"""

from __future__ import annotations

from dataclasses import dataclass

from django.db import models
from django.utils.translation import gettext_lazy as _


class Platform(models.TextChoices):
    MACOS = "macos", _("macOS")
    WINDOWS = "windows", _("Windows")
    FIREFOX = "firefox", _("Firefox")
    LINUX = "linux", _("Chrome or Edge on Linux")
    ANDROID = "android", _("Android")
    IOS = "ios", _("iPhone or iPad")
    COMMAND_LINE = "cli", _("Command line or server")


class P12Encryption(models.TextChoices):
    MODERN = "modern", _("modern (AES-256)")
    LEGACY = "legacy", _("legacy (3DES)")


#: The .p12 encryption each platform reads; the command line takes PEM files and needs no .p12.
P12_FOR: dict[str, P12Encryption] = {
    Platform.MACOS: P12Encryption.LEGACY,
    Platform.WINDOWS: P12Encryption.MODERN,
    Platform.FIREFOX: P12Encryption.MODERN,
    Platform.LINUX: P12Encryption.MODERN,
    Platform.ANDROID: P12Encryption.LEGACY,
    Platform.IOS: P12Encryption.LEGACY,
}

#: The downloads each platform needs, in the order shown (the others are under "Other formats").
FILES_FOR: dict[str, tuple[str, ...]] = {
    **{platform: ("chain",) for platform in P12_FOR},
    Platform.COMMAND_LINE: ("pem", "chain"),
}

#: User-Agent fragments, first match wins: phones first (their browsers also say "Linux" or "Mac OS X"),
#: Firefox before the desktop systems (it keeps its own certificate store on all of them).
_USER_AGENT_HINTS: tuple[tuple[tuple[str, ...], Platform], ...] = (
    (("iphone", "ipad", "ipod"), Platform.IOS),
    (("android",), Platform.ANDROID),
    (("firefox/",), Platform.FIREFOX),
    (("windows",), Platform.WINDOWS),
    (("macintosh", "mac os x"), Platform.MACOS),
    (("cros", "linux", "x11"), Platform.LINUX),
)


def platform_from_user_agent(user_agent: str) -> Platform:
    """The platform a User-Agent header most likely runs on; the command line when it names none (curl,
    scripts, no header)."""
    text = user_agent.lower()
    for fragments, platform in _USER_AGENT_HINTS:
        if any(fragment in text for fragment in fragments):
            return platform
    return Platform.COMMAND_LINE


def chosen_platform(asked: str | None, user_agent: str) -> tuple[Platform, bool]:
    """The platform to show: the one asked for with ``?platform=`` if it is one, else the guess from the
    User-Agent; and whether it was asked for (then the browser's script leaves it alone)."""
    if asked in Platform.values:
        return Platform(asked), True
    return platform_from_user_agent(user_agent), False


@dataclass(frozen=True, slots=True)
class PlatformChoice:
    platform: Platform
    chosen: bool
    p12: P12Encryption | None
    files: tuple[str, ...]

    @property
    def value(self) -> str:
        return str(self.platform.value)

    @property
    def label(self) -> str:
        return str(self.platform.label)


def platform_choices(chosen: Platform) -> list[PlatformChoice]:
    return [
        PlatformChoice(platform, platform == chosen, P12_FOR.get(platform), FILES_FOR[platform])
        for platform in Platform
    ]
