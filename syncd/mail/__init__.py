"""Pure mail reading: bytes in, values out (addresses, headers, parsed email); no I/O."""
