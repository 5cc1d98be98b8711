"""A guard run on outside DER before any recursive decoder sees it: how deeply its structures nest.

Recursive ASN.1 decoders (asn1crypto's ``.native``, and anything that walks a structure by recursion) can be
driven out of stack by a few kilobytes of SEQUENCEs inside SEQUENCEs: 950 levels fit in 3.6 KB and raised
``RecursionError`` deep in a request. Nothing this portal reads nests anywhere near that: a certificate, CSR,
SPKAC, CRL or OCSP request is at most about a dozen levels deep (Certificate > TBSCertificate > Name >
RelativeDistinguishedName > AttributeTypeAndValue > value is six; extension values are OCTET STRINGs, which
are not walked). :func:`nesting_depth` measures depth without recursion, over the tag-length-value encoding
of X.690 8.1, and stops as soon as the limit is passed, so its cost is linear in the input and bounded.
"""

from __future__ import annotations

#: Deeper than anything legitimate by a wide margin (see the module docstring).
MAX_DEPTH = 32


class TooDeep(ValueError):
    """The input nests constructed ASN.1 values more than the limit allows."""


def _header(data: bytes, offset: int, end: int) -> tuple[bool, int, int] | None:
    """(constructed, start of contents, end of contents) of the TLV at ``offset``; None if unreadable.

    Indefinite lengths (BER, X.690 8.1.3.6) are not DER and are not walked: the real parser refuses them.
    """
    if offset >= end:
        return None
    first = data[offset]
    constructed = bool(first & 0x20)
    position = offset + 1
    if first & 0x1F == 0x1F:  # high tag number form (8.1.2.4): base-128 digits, last one without bit 8
        while position < end and data[position] & 0x80:
            position += 1
        position += 1
    if position >= end:
        return None
    length_octet = data[position]
    position += 1
    if length_octet < 0x80:
        length = length_octet
    elif length_octet == 0x80 or length_octet == 0xFF:
        return None
    else:
        count = length_octet & 0x7F
        if count > 8 or position + count > end:
            return None
        length = int.from_bytes(data[position : position + count], "big")
        position += count
    if position + length > end:
        return None
    return constructed, position, position + length


def nesting_depth(data: bytes, *, limit: int = MAX_DEPTH) -> int:
    """The deepest nesting of constructed values in ``data`` (1 for a primitive value alone).

    Walks every TLV of the first object and what follows it, iteratively; parts that cannot be read are
    left to the real parser (this guard only measures). Raises :class:`TooDeep` as soon as ``limit`` is
    passed, without reading further.
    """
    deepest = 0
    # Each stack entry: (next offset to read, end of the enclosing contents) at one depth.
    stack: list[tuple[int, int]] = [(0, len(data))]
    while stack:
        offset, end = stack[-1]
        header = _header(data, offset, end)
        if header is None:
            stack.pop()
            continue
        constructed, start, stop = header
        stack[-1] = (stop, end)
        depth = len(stack)
        deepest = max(deepest, depth)
        if constructed and start < stop:
            if depth >= limit:
                raise TooDeep(f"the structure nests more than {limit} levels deep")
            stack.append((start, stop))
    return deepest


def check_depth(data: bytes, *, limit: int = MAX_DEPTH) -> None:
    """Raise :class:`TooDeep` if ``data`` nests deeper than ``limit``."""
    nesting_depth(data, limit=limit)


def leading_tags(data: bytes, *, levels: int = 3) -> tuple[int, ...]:
    """The tags down the first branch of ``data``: the first value's tag, then, while that value is
    constructed, the tag of its first element, up to ``levels`` tags.

    Lengths are not checked against the data (a value cut short still shows where it starts), so this tells
    what a value is meant to be even when it is incomplete: a PKCS#10 request starts SEQUENCE, SEQUENCE,
    INTEGER (CertificationRequest > CertificationRequestInfo > version), a SubjectPublicKeyInfo SEQUENCE,
    SEQUENCE, OBJECT IDENTIFIER. Stops early at anything it cannot read (high tag numbers included).
    """
    tags: list[int] = []
    offset = 0
    while len(tags) < levels and offset < len(data):
        tag = data[offset]
        if tag & 0x1F == 0x1F:
            break
        tags.append(tag)
        if not tag & 0x20 or offset + 1 >= len(data):
            break
        length_octet = data[offset + 1]
        if length_octet == 0x80 or length_octet == 0xFF:
            break
        offset += 2 + (length_octet & 0x7F if length_octet & 0x80 else 0)
    return tuple(tags)
