/* ProcessPrng, which Rust's standard library calls for random numbers on Windows (since Rust
 * 1.78), from bcryptprimitives.dll. Wine 8 (Debian 12's) has no such DLL, so popsync.exe
 * cannot start there; the Wine test puts this one beside it. Built by scripts/test with the
 * MinGW compiler the Windows build check needs anyway. Not part of popsync.
 */
#include <windows.h>
#include <bcrypt.h>
BOOL WINAPI ProcessPrng(PBYTE data, SIZE_T len) {
    return BCryptGenRandom(NULL, data, (ULONG)len, BCRYPT_USE_SYSTEM_PREFERRED_RNG) == 0;
}
