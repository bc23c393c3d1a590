using System.Buffers.Binary;
using System.Text;

namespace Harness.Executor.Native;

/// <summary>
/// Reads and edits the version requirements (<c>.gnu.version_r</c>: Verneed/Vernaux records) of a 64-bit
/// little-endian ELF shared library.
/// Why: TorchSharp 0.107.0's libLibTorchSharp.so asks libstdc++ for GLIBCXX_3.4.32 (GCC 13), which Debian 12
/// and Ubuntu 22.04 lack, so the dynamic loader refuses it. The only symbol behind that version is
/// <c>std::ios_base_library_init()</c>, which the library never calls. Marking the requirement weak
/// (VER_FLG_WEAK in vna_flags) makes the loader accept a libstdc++ without it (System V gABI, "Symbol
/// Versioning": a weak version reference is not an error when absent). Layouts from the gABI / LSB:
/// Elf64_Ehdr e_shoff@0x28, e_shentsize@0x3A, e_shnum@0x3C; Elf64_Shdr 64 bytes; Verneed and Vernaux 16 bytes.
/// </summary>
public static class ElfVersionNeeds
{
    /// <summary>SHT_GNU_verneed: the section type of .gnu.version_r.</summary>
    private const uint ShtGnuVerneed = 0x6ffffffe;

    /// <summary>VER_FLG_WEAK: a version reference whose absence is not an error.</summary>
    public const ushort VerFlagWeak = 0x2;

    /// <summary>One version a library needs from another: the file (e.g. libstdc++.so.6), the version name, its flags and where vna_flags lives.</summary>
    public sealed record Requirement(string File, string Version, ushort Flags, long FlagsOffset);

    /// <summary>Every version requirement of the library image, in file order.</summary>
    public static IReadOnlyList<Requirement> Read(ReadOnlySpan<byte> elf)
    {
        if (elf.Length < 64 || elf[0] != 0x7f || elf[1] != (byte)'E' || elf[2] != (byte)'L' || elf[3] != (byte)'F')
            throw new InvalidDataException("not an ELF file");
        if (elf[4] != 2 || elf[5] != 1)
            throw new InvalidDataException("only 64-bit little-endian ELF files are supported");
        long shoff = (long)U64(elf, 0x28);
        int shentsize = U16(elf, 0x3A), shnum = U16(elf, 0x3C);
        var result = new List<Requirement>();
        for (int i = 0; i < shnum; i++)
        {
            var sh = elf.Slice(checked((int)(shoff + (long)i * shentsize)), shentsize);
            if (U32(sh, 4) != ShtGnuVerneed) continue;
            long offset = (long)U64(sh, 24);
            int link = (int)U32(sh, 40), count = (int)U32(sh, 44);
            var strtab = elf.Slice(checked((int)(shoff + (long)link * shentsize)), shentsize);
            long strOffset = (long)U64(strtab, 24);
            long vn = offset;
            for (int n = 0; n < count; n++)
            {
                int auxCount = U16(elf, vn + 2);
                string file = CString(elf, strOffset + U32(elf, vn + 4));
                long aux = vn + U32(elf, vn + 8);
                for (int a = 0; a < auxCount; a++)
                {
                    result.Add(new Requirement(file, CString(elf, strOffset + U32(elf, aux + 8)), U16(elf, aux + 4), aux + 4));
                    aux += U32(elf, aux + 12);
                }
                vn += U32(elf, vn + 12);
            }
        }
        return result;
    }

    /// <summary>Marks the named versions weak in place; returns how many requirements changed.</summary>
    public static int MarkWeak(Span<byte> elf, IReadOnlySet<string> versions)
    {
        int changed = 0;
        foreach (var r in Read(elf))
        {
            if (!versions.Contains(r.Version) || (r.Flags & VerFlagWeak) != 0) continue;
            BinaryPrimitives.WriteUInt16LittleEndian(elf.Slice((int)r.FlagsOffset, 2), (ushort)(r.Flags | VerFlagWeak));
            changed++;
        }
        return changed;
    }

    private static ushort U16(ReadOnlySpan<byte> b, long at) => BinaryPrimitives.ReadUInt16LittleEndian(b.Slice(checked((int)at), 2));
    private static uint U32(ReadOnlySpan<byte> b, long at) => BinaryPrimitives.ReadUInt32LittleEndian(b.Slice(checked((int)at), 4));
    private static ulong U64(ReadOnlySpan<byte> b, long at) => BinaryPrimitives.ReadUInt64LittleEndian(b.Slice(checked((int)at), 8));

    private static string CString(ReadOnlySpan<byte> b, long at)
    {
        var s = b[checked((int)at)..];
        int end = s.IndexOf((byte)0);
        return Encoding.ASCII.GetString(end < 0 ? s : s[..end]);
    }
}
