"""Names shared by the host side (pyroot.py) and the guest job (guest.py) for the engine library
(native.py). A module of constants only, so the guest imports nothing heavy to read them."""

NATIVE_ENV = "MMREPLAY_NATIVE_ENGINE"  # the library's manifest: the guest loads it, not numba
NATIVE_BUILD_ENV = "MMREPLAY_NATIVE_BUILD"  # warm-up on the host: build the library here
NATIVE_FAILED = "native-failed.txt"  # why the build failed (the guest then loads numba)
