"""CA keys in a PKCS#11 token (an HSM, or SoftHSM2): generate, import, find and sign with them.

The key never leaves the token: it is generated there (or imported once) with ``CKA_SENSITIVE`` true and
``CKA_EXTRACTABLE`` false (PKCS#11 v2.40 section 4.9, "Private key objects"), so the token refuses to
reveal ``CKA_VALUE`` or wrap it out. The portal keeps only where the key is, as an RFC 7512 PKCS#11 URI
(``pkcs11:token=...;object=...;id=...?module-path=...``); the user PIN comes from a file or the
environment when the token is opened and is never written anywhere.

:class:`Pkcs11KeyBackend` is a :class:`ca.pki.signing.KeyBackend`. ECDSA keys sign with ``CKM_ECDSA``
over a hash computed here (v2.40 Current Mechanisms 2.3.6: the token returns r || s, which becomes the DER
``ECDSA-Sig-Value`` X.509 carries); RSA keys sign with ``CKM_SHA256_RSA_PKCS`` / ``CKM_SHA384_RSA_PKCS``
(PKCS#1 v1.5, hashed in the token). Each process keeps one logged-in session per token, shared by every
key in it under one lock (a session runs one operation at a time, v2.40 section 5.6), and opens it again
when the token went away (removed, re-initialised, or the process was forked).

Every PKCS#11 failure becomes one :class:`ca.pki.errors.CAKeyError` line that says what is wrong and
what to do: a wrong or locked PIN, a missing token, a module that cannot be loaded, a key without the sign
permission, a full token, no such key.
"""

from __future__ import annotations

import os
import secrets
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any, TypeVar
from urllib.parse import quote, unquote

from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

import pkcs11
from pkcs11 import Attribute, KeyType, Mechanism, ObjectClass
from pkcs11 import exceptions as p11

from .errors import CAKeyError, KeyUnavailableError
from .keys import CAKeyType, CAPrivateKey
from .signing import CAPublicKey, Purpose, SignatureHash

#: Debian's SoftHSM2 module (package softhsm2).
SOFTHSM2_MODULE = "/usr/lib/softhsm/libsofthsm2.so"

_T = TypeVar("_T")

_CURVES: dict[str, ec.EllipticCurve] = {"secp256r1": ec.SECP256R1(), "secp384r1": ec.SECP384R1()}
#: DER of the namedCurve OIDs (RFC 5480 2.1.1.1), what CKA_EC_PARAMS holds for a named curve.
_EC_PARAMS = {
    "secp256r1": bytes.fromhex("06082a8648ce3d030107"),
    "secp384r1": bytes.fromhex("06052b81040022"),
}
_RSA_MECHANISMS = {"sha256": Mechanism.SHA256_RSA_PKCS, "sha384": Mechanism.SHA384_RSA_PKCS}


# --- RFC 7512 URIs ------------------------------------------------------------------------------------

_UNRESERVED = "-._~"


class UriError(ValueError):
    """Not a PKCS#11 URI this portal can use."""


@dataclass(frozen=True, slots=True)
class TokenKey:
    """Where a key is: the module that reaches the token, the token's label, the key's label and id.

    As a string it is an RFC 7512 URI: path attributes ``token``, ``object``, ``id`` and ``type``
    (section 2.3), the query attribute ``module-path`` (section 2.4), values percent-encoded.
    """

    module_path: str
    token: str
    label: str
    id: bytes = b""

    def uri(self) -> str:
        path = [
            f"token={quote(self.token, safe=_UNRESERVED)}",
            f"object={quote(self.label, safe=_UNRESERVED)}",
        ]
        if self.id:
            path.append("id=" + "".join(f"%{byte:02x}" for byte in self.id))
        path.append("type=private")
        return "pkcs11:" + ";".join(path) + "?module-path=" + quote(self.module_path, safe=_UNRESERVED + "/")

    @classmethod
    def parse(cls, uri: str) -> TokenKey:
        """The key an RFC 7512 URI names; it must name a token, a key (by label) and the module."""
        if not is_pkcs11_uri(uri):
            raise UriError("A PKCS#11 key is named by a URI that starts with 'pkcs11:'.")
        path, _, query = uri[len("pkcs11:") :].partition("?")
        attributes: dict[str, str] = {}
        for part in (*path.split(";"), *query.split("&")):
            if not part:
                continue
            name, equals, value = part.partition("=")
            if not equals:
                raise UriError(f"The PKCS#11 URI attribute '{name}' has no value.")
            attributes[name] = value
        missing = [name for name in ("token", "object", "module-path") if not attributes.get(name)]
        if missing:
            raise UriError(f"The PKCS#11 URI lacks {', '.join(missing)}.")
        return cls(
            module_path=unquote(attributes["module-path"]),
            token=unquote(attributes["token"]),
            label=unquote(attributes["object"]),
            id=unquote(attributes.get("id", ""), encoding="latin-1").encode("latin-1"),
        )


def is_pkcs11_uri(text: str) -> bool:
    return text.startswith("pkcs11:")


# --- errors in plain words ----------------------------------------------------------------------------


@contextmanager
def _plain_errors(*, module_path: str, token: str, doing: str, key: str = "") -> Iterator[None]:
    """Every PKCS#11 failure inside as one CAKeyError line (the return values are PKCS#11 v2.40 5.1's)."""
    try:
        yield
    except CAKeyError:
        raise
    except (p11.PinIncorrect, p11.PinInvalid, p11.PinLenRange):
        raise KeyUnavailableError(
            f"The PKCS#11 token '{token}' refused the PIN (CKR_PIN_INCORRECT): put the token's user PIN "
            "in the PIN file (ENROLL_PKCS11_PIN_FILE or --pkcs11-pin-file) or ENROLL_PKCS11_PIN."
        ) from None
    except p11.PinLocked:
        raise KeyUnavailableError(
            f"The user PIN of the PKCS#11 token '{token}' is locked after too many wrong tries "
            "(CKR_PIN_LOCKED): the token's security officer must unlock it."
        ) from None
    except (p11.NoSuchToken, p11.TokenNotPresent, p11.TokenNotRecognised, p11.DeviceRemoved):
        raise KeyUnavailableError(
            f"There is no PKCS#11 token labelled '{token}' in {module_path}: check the token's label "
            "(softhsm2-util --show-slots, pkcs11-tool --list-slots) and that the HSM is connected."
        ) from None
    except p11.NoSuchKey:
        raise CAKeyError(
            f"The PKCS#11 token '{token}' holds no private key {key}: check the key's label and id "
            "(pkcs11-tool --list-objects --login)."
        ) from None
    except p11.MultipleObjectsReturned:
        raise CAKeyError(
            f"The PKCS#11 token '{token}' holds more than one private key {key}: name it by its id too."
        ) from None
    except (p11.DeviceMemory, p11.HostMemory):
        raise CAKeyError(
            f"The PKCS#11 token '{token}' is full (CKR_DEVICE_MEMORY) and could not {doing}: delete "
            "objects it no longer needs, or use another token."
        ) from None
    except (p11.TokenWriteProtected, p11.SessionReadOnly):
        raise CAKeyError(
            f"The PKCS#11 token '{token}' is write-protected and could not {doing}: use a writable token."
        ) from None
    except (p11.MechanismInvalid, p11.KeyTypeInconsistent, p11.KeySizeRange, p11.DomainParamsInvalid):
        raise CAKeyError(
            f"The PKCS#11 token '{token}' cannot {doing} with this kind of key: choose another key type "
            "(ec-p256, ec-p384, rsa-3072, rsa-4096) or another token."
        ) from None
    except p11.PKCS11Error as exc:
        text = str(exc) or type(exc).__name__
        if "0x68" in text:  # CKR_KEY_FUNCTION_NOT_PERMITTED, which the binding does not name
            raise CAKeyError(_no_sign_permission(token=token, key=key)) from None
        if "loading" in text:
            raise KeyUnavailableError(
                f"The PKCS#11 module {module_path} cannot be loaded ({text.rpartition(': ')[2]}): install "
                "the HSM's PKCS#11 library or correct the module path."
            ) from None
        raise CAKeyError(
            f"The PKCS#11 token '{token}' could not {doing} ({text}): check the token with its own tools."
        ) from None


def _no_sign_permission(*, token: str, key: str) -> str:
    return (
        f"The private key {key} in the PKCS#11 token '{token}' may not sign (CKA_SIGN is false): "
        "generate or import the CA key with the sign permission."
    )


# --- modules and sessions -----------------------------------------------------------------------------


class _Module:
    """A loaded PKCS#11 module: initialised once per process (v2.40 5.4: a forked child must call
    C_Initialize again) and again when a token is not found (SoftHSM2 reads its token directory there)."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.lock = threading.RLock()
        self.generation = 0
        self._pid = os.getpid()
        self.lib = pkcs11.lib(path)

    def fresh(self) -> None:
        """Initialise again in a forked child; sessions of the parent are gone."""
        if self._pid != os.getpid():
            self.reinitialize()

    def reinitialize(self) -> None:
        with self.lock:
            try:
                self.lib.reinitialize()
            except p11.PKCS11Error:
                self.lib.finalize()
                self.lib.initialize()
            self._pid = os.getpid()
            self.generation += 1


_modules: dict[str, _Module] = {}
_modules_lock = threading.Lock()


def _module(path: str, *, token: str) -> _Module:
    with _modules_lock:
        module = _modules.get(path)
        if module is None:
            with _plain_errors(module_path=path, token=token, doing="load its module"):
                if not os.path.exists(path):
                    raise CAKeyError(
                        f"The PKCS#11 module {path} does not exist: install the HSM's PKCS#11 library "
                        "(softhsm2 for SoftHSM2) or correct the module path."
                    )
                module = _Module(path)
            _modules[path] = module
    module.fresh()
    return module


def _token_labelled(module: _Module, label: str) -> Any:
    """The token labelled ``label``; a slot whose token cannot be read (damaged, being removed) is passed
    over rather than hiding the others."""
    found = []
    for slot in module.lib.get_slots(token_present=True):
        try:
            token = slot.get_token()
        except p11.PKCS11Error:
            continue
        if token.label == label:
            found.append(token)
    if not found:
        raise p11.NoSuchToken(label)
    if len(found) > 1:
        raise CAKeyError(f"More than one PKCS#11 token is labelled '{label}': give each token its own label.")
    return found[0]


def _find_token(module: _Module, label: str) -> Any:
    try:
        return _token_labelled(module, label)
    except p11.NoSuchToken:
        module.reinitialize()  # a token made or plugged in since C_Initialize
        return _token_labelled(module, label)


class _Session:
    """The one logged-in read-write session of this process on one token, shared under one lock."""

    def __init__(self, *, module: _Module, token: str) -> None:
        self.module = module
        self.token = token
        self.lock = threading.RLock()
        self._session: Any = None
        self._pin: str | None = None
        self._generation = -1

    def get(self, *, pin: str) -> Any:
        """The open session (opened or re-opened now if needed); call with ``lock`` held."""
        self.module.fresh()
        if self._session is not None and self._pin == pin and self._generation == self.module.generation:
            return self._session
        self.drop()
        token = _find_token(self.module, self.token)
        try:
            session = token.open(rw=True, user_pin=pin)
        except p11.UserAlreadyLoggedIn:
            # a session of this process left logged in: the login state is the token's (v2.40 5.6)
            self.module.reinitialize()
            session = _find_token(self.module, self.token).open(rw=True, user_pin=pin)
        self._session, self._pin, self._generation = session, pin, self.module.generation
        return session

    def drop(self) -> None:
        session, self._session, self._pin = self._session, None, None
        if session is not None and self._generation == self.module.generation:
            with suppress(p11.PKCS11Error):
                session.close()


_sessions: dict[tuple[str, str], _Session] = {}


def _session(*, module_path: str, token: str) -> _Session:
    module = _module(module_path, token=token)
    with _modules_lock:
        session = _sessions.get((module_path, token))
        if session is None:
            session = _sessions[(module_path, token)] = _Session(module=module, token=token)
        return session


def reinitialize_modules() -> None:
    """Initialise every loaded module again, dropping this process's sessions: for a token configuration
    that changed under a running process (SoftHSM2 reads ``SOFTHSM2_CONF`` in C_Initialize)."""
    with _modules_lock:
        modules = list(_modules.values())
    for module in modules:
        module.reinitialize()


#: Failures after which the session is opened again once: the token went away and may be back.
_GONE = (
    p11.SessionHandleInvalid,
    p11.SessionClosed,
    p11.DeviceRemoved,
    p11.TokenNotPresent,
    p11.ObjectHandleInvalid,
    p11.KeyHandleInvalid,
    p11.DeviceError,
)


def _with_session(*, where: TokenKey, pin: str, doing: str, key: str, action: Callable[[Any], _T]) -> _T:
    """``action(session)`` under the token's lock, once more on a fresh session if the token went away."""
    with _plain_errors(module_path=where.module_path, token=where.token, doing=doing, key=key):
        shared = _session(module_path=where.module_path, token=where.token)
        with shared.lock:
            try:
                return action(shared.get(pin=pin))
            except _GONE:
                shared.drop()
                shared.module.reinitialize()
                return action(shared.get(pin=pin))
            except (p11.PinIncorrect, p11.PinLocked, p11.PinInvalid, p11.PinLenRange):
                shared.drop()
                raise


# --- keys ---------------------------------------------------------------------------------------------


def _key_name(where: TokenKey) -> str:
    return f"'{where.label}'" + (f" (id {where.id.hex()})" if where.id else "")


def _find(session: Any, where: TokenKey, object_class: ObjectClass) -> Any:
    return session.get_key(object_class=object_class, label=where.label, id=where.id or None)


def _objects(session: Any, where: TokenKey, object_class: ObjectClass) -> list[Any]:
    attributes: dict[Attribute, Any] = {Attribute.CLASS: object_class, Attribute.LABEL: where.label}
    if where.id:
        attributes[Attribute.ID] = where.id
    return list(session.get_objects(attributes))


def _public_key_of(public: Any) -> CAPublicKey:
    """A token public key object as `cryptography`'s (CKA_EC_PARAMS and CKA_EC_POINT, or CKA_MODULUS
    and CKA_PUBLIC_EXPONENT)."""
    if public.key_type == KeyType.EC:
        params = bytes(public[Attribute.EC_PARAMS])
        curve = next((_CURVES[name] for name, der in _EC_PARAMS.items() if der == params), None)
        if curve is None:
            raise CAKeyError("The token's EC key is on a curve the portal does not use (P-256, P-384).")
        point = bytes(public[Attribute.EC_POINT])
        if len(point) > 2 and point[0] == 0x04 and point[1] == len(point) - 2:  # DER OCTET STRING
            point = point[2:]
        return ec.EllipticCurvePublicKey.from_encoded_point(curve, point)
    if public.key_type == KeyType.RSA:
        modulus = int.from_bytes(bytes(public[Attribute.MODULUS]), "big")
        exponent = int.from_bytes(bytes(public[Attribute.PUBLIC_EXPONENT]), "big")
        return rsa.RSAPublicNumbers(exponent, modulus).public_key()
    raise CAKeyError("A CA key must be RSA or ECDSA.")


def _private_template(where: TokenKey) -> dict[Attribute, Any]:
    """A CA key: on the token, private, sensitive, never extractable, for signing only."""
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: True,
        Attribute.SENSITIVE: True,
        Attribute.EXTRACTABLE: False,
        Attribute.SIGN: True,
        Attribute.DECRYPT: False,
        Attribute.UNWRAP: False,
        Attribute.DERIVE: False,
        Attribute.LABEL: where.label,
        Attribute.ID: where.id,
    }


def _public_template(where: TokenKey) -> dict[Attribute, Any]:
    return {
        Attribute.TOKEN: True,
        Attribute.PRIVATE: False,
        Attribute.VERIFY: True,
        Attribute.ENCRYPT: False,
        Attribute.WRAP: False,
        Attribute.DERIVE: False,
        Attribute.LABEL: where.label,
        Attribute.ID: where.id,
    }


def new_key_id() -> bytes:
    """A random CKA_ID for a new key (8 bytes), so two keys of the same label stay apart."""
    return secrets.token_bytes(8)


def _refuse_existing(session: Any, where: TokenKey) -> None:
    by_label = TokenKey(module_path=where.module_path, token=where.token, label=where.label)
    if _objects(session, by_label, ObjectClass.PRIVATE_KEY):
        raise CAKeyError(
            f"The PKCS#11 token '{where.token}' holds a private key labelled '{where.label}' already; "
            "choose another label (a key in a token is never overwritten)."
        )


def generate_key(*, where: TokenKey, pin: str, key_type: CAKeyType) -> Pkcs11KeyBackend:
    """Generate a CA key pair inside the token (CKM_EC_KEY_PAIR_GEN or CKM_RSA_PKCS_KEY_PAIR_GEN) and
    return its backend. The private key is sensitive and not extractable from birth, so the token also
    reports CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE true (PKCS#11 v2.40 4.9)."""

    def generate(session: Any) -> None:
        _refuse_existing(session, where)
        if key_type in (CAKeyType.EC_P256, CAKeyType.EC_P384):
            curve = "secp256r1" if key_type is CAKeyType.EC_P256 else "secp384r1"
            params = session.create_domain_parameters(
                KeyType.EC, {Attribute.EC_PARAMS: _EC_PARAMS[curve]}, local=True
            )
            params.generate_keypair(
                store=True,
                public_template=_public_template(where),
                private_template=_private_template(where),
            )
        else:
            bits = 3072 if key_type is CAKeyType.RSA_3072 else 4096
            session.generate_keypair(
                KeyType.RSA,
                bits,
                store=True,
                public_template={**_public_template(where), Attribute.PUBLIC_EXPONENT: b"\x01\x00\x01"},
                private_template=_private_template(where),
            )

    _with_session(where=where, pin=pin, doing="generate a key pair", key=_key_name(where), action=generate)
    return Pkcs11KeyBackend(where=where, pin=pin)


def _value(number: int, size: int) -> bytes:
    return number.to_bytes(size, "big")


def import_key(*, where: TokenKey, pin: str, key: CAPrivateKey) -> Pkcs11KeyBackend:
    """Put an existing private key into the token (C_CreateObject) as sensitive and not extractable, with
    its public key beside it. The token reports CKA_ALWAYS_SENSITIVE and CKA_NEVER_EXTRACTABLE false: the
    key lived outside before, and any copy of it outside must be destroyed."""
    private = _private_template(where)
    public = _public_template(where)
    if isinstance(key, ec.EllipticCurvePrivateKey):
        curve = key.curve.name
        if curve not in _EC_PARAMS:
            raise CAKeyError("Only P-256 and P-384 CA keys can be moved into a token.")
        size = (key.curve.key_size + 7) // 8
        point = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        private |= {
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
            Attribute.KEY_TYPE: KeyType.EC,
            Attribute.EC_PARAMS: _EC_PARAMS[curve],
            Attribute.VALUE: _value(key.private_numbers().private_value, size),
        }
        public |= {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.KEY_TYPE: KeyType.EC,
            Attribute.EC_PARAMS: _EC_PARAMS[curve],
            Attribute.EC_POINT: _octet_string(point),  # DER, as PKCS#11 v2.40 2.3.3 asks
        }
    else:
        numbers = key.private_numbers()

        def big(number: int) -> bytes:
            return number.to_bytes(max(1, (number.bit_length() + 7) // 8), "big")

        private |= {
            Attribute.CLASS: ObjectClass.PRIVATE_KEY,
            Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.MODULUS: big(numbers.public_numbers.n),
            Attribute.PUBLIC_EXPONENT: big(numbers.public_numbers.e),
            Attribute.PRIVATE_EXPONENT: big(numbers.d),
            Attribute.PRIME_1: big(numbers.p),
            Attribute.PRIME_2: big(numbers.q),
            Attribute.EXPONENT_1: big(numbers.dmp1),
            Attribute.EXPONENT_2: big(numbers.dmq1),
            Attribute.COEFFICIENT: big(numbers.iqmp),
        }
        public |= {
            Attribute.CLASS: ObjectClass.PUBLIC_KEY,
            Attribute.KEY_TYPE: KeyType.RSA,
            Attribute.MODULUS: big(numbers.public_numbers.n),
            Attribute.PUBLIC_EXPONENT: big(numbers.public_numbers.e),
        }

    def create(session: Any) -> None:
        _refuse_existing(session, where)
        session.create_object(private)
        session.create_object(public)

    _with_session(where=where, pin=pin, doing="store the key", key=_key_name(where), action=create)
    return Pkcs11KeyBackend(where=where, pin=pin)


def _octet_string(value: bytes) -> bytes:
    length = bytes([len(value)]) if len(value) < 0x80 else bytes([0x81, len(value)])
    return b"\x04" + length + value


def destroy_key(*, where: TokenKey, pin: str) -> None:
    """Remove the key pair from the token (used when a CA could not be created around it)."""

    def destroy(session: Any) -> None:
        for object_class in (ObjectClass.PRIVATE_KEY, ObjectClass.PUBLIC_KEY):
            for found in _objects(session, where, object_class):
                found.destroy()

    _with_session(where=where, pin=pin, doing="remove a key", key=_key_name(where), action=destroy)


@dataclass(frozen=True, slots=True)
class KeyFacts:
    """What the token says about a private key (PKCS#11 v2.40 4.9): an auditor's questions."""

    sensitive: bool
    extractable: bool
    always_sensitive: bool
    never_extractable: bool
    can_sign: bool


class Pkcs11KeyBackend:
    """A CA key in a PKCS#11 token (:class:`ca.pki.signing.KeyBackend`).

    ``public_key`` is the certificate's public key when the caller knows it (then a token holding another
    key is caught by the signature check of :mod:`ca.pki.signing`), else read from the token's public key
    object of the same label and id.
    """

    def __init__(self, *, where: TokenKey, pin: str, public_key: CAPublicKey | None = None) -> None:
        self.where = where
        self._pin = pin
        self._public_key = public_key
        self._handle: tuple[Any, Any] | None = None  # (session, its key object)

    def __repr__(self) -> str:
        return f"Pkcs11KeyBackend({self.where.uri()})"

    def _call(self, doing: str, action: Callable[[Any], _T]) -> _T:
        return _with_session(
            where=self.where, pin=self._pin, doing=doing, key=_key_name(self.where), action=action
        )

    def _private(self, session: Any) -> Any:
        handle = self._handle
        if handle is not None and handle[0] is session:
            return handle[1]
        key = _find(session, self.where, ObjectClass.PRIVATE_KEY)
        if not key[Attribute.SIGN]:
            raise CAKeyError(_no_sign_permission(token=self.where.token, key=_key_name(self.where)))
        self._handle = (session, key)
        return key

    def public_key(self) -> CAPublicKey:
        if self._public_key is None:
            self._public_key = self._call(
                "read the public key",
                lambda session: _public_key_of(_find(session, self.where, ObjectClass.PUBLIC_KEY)),
            )
        return self._public_key

    def sign(self, *, data: bytes, algorithm: SignatureHash, purpose: Purpose) -> bytes:
        del purpose  # the token signs what the core hands it
        digest = hashes.Hash(algorithm)
        digest.update(data)
        hashed = digest.finalize()

        def sign(session: Any) -> bytes:
            key = self._private(session)
            if key.key_type == KeyType.EC:
                raw = bytes(key.sign(hashed, mechanism=Mechanism.ECDSA))
                half = len(raw) // 2
                return encode_dss_signature(
                    int.from_bytes(raw[:half], "big"), int.from_bytes(raw[half:], "big")
                )
            return bytes(key.sign(data, mechanism=_RSA_MECHANISMS[algorithm.name]))

        try:
            return self._call("sign", sign)
        except CAKeyError as exc:
            kind = KeyUnavailableError if isinstance(exc, KeyUnavailableError) else CAKeyError
            raise kind(f"The CA key is not available: {exc}") from None

    def facts(self) -> KeyFacts:
        def read(session: Any) -> KeyFacts:
            key = _find(session, self.where, ObjectClass.PRIVATE_KEY)
            return KeyFacts(
                sensitive=bool(key[Attribute.SENSITIVE]),
                extractable=bool(key[Attribute.EXTRACTABLE]),
                always_sensitive=bool(key[Attribute.ALWAYS_SENSITIVE]),
                never_extractable=bool(key[Attribute.NEVER_EXTRACTABLE]),
                can_sign=bool(key[Attribute.SIGN]),
            )

        return self._call("read the key's attributes", read)

    def export_value(self) -> bytes:
        """Ask the token for the private key's CKA_VALUE: a CA key's token refuses
        (CKR_ATTRIBUTE_SENSITIVE), which is what this is for (tests and audits)."""

        def read(session: Any) -> bytes:
            key = _find(session, self.where, ObjectClass.PRIVATE_KEY)
            attribute = Attribute.VALUE if key.key_type == KeyType.EC else Attribute.PRIVATE_EXPONENT
            try:
                return bytes(key[attribute])
            except p11.AttributeSensitive:
                raise CAKeyError(
                    f"The token refuses to reveal the private key {_key_name(self.where)} "
                    "(CKR_ATTRIBUTE_SENSITIVE): it cannot be copied out."
                ) from None

        return self._call("read the key", read)
