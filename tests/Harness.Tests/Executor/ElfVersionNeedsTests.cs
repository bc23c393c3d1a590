using Harness.Executor.Native;

namespace Harness.Tests.Executor;

public class ElfVersionNeedsTests
{
    private static byte[] Bridge() =>
        File.ReadAllBytes(Path.Combine(AppContext.BaseDirectory, "runtimes", "linux-x64", "native", "libLibTorchSharp.so"));

    [Fact]
    public void ReadsTheBridgeVersionRequirementsAsReadelfShowsThem()
    {
        var needs = ElfVersionNeeds.Read(Bridge());
        // readelf -V: ld-linux 1, libm 1, libgcc_s 1, libc 5, libstdc++ 20 requirements, none weak.
        Assert.Equal(28, needs.Count);
        Assert.Equal(20, needs.Count(n => n.File == "libstdc++.so.6"));
        Assert.Equal(5, needs.Count(n => n.File == "libc.so.6"));
        Assert.All(needs, n => Assert.Equal(0, n.Flags));
        Assert.Contains(needs, n => n.File == "libstdc++.so.6" && n.Version == "GLIBCXX_3.4.32");
    }

    [Fact]
    public void MarkWeakSetsOnlyTheNamedFlagAndChangesNoOtherByte()
    {
        byte[] original = Bridge(), patched = (byte[])original.Clone();
        Assert.Equal(1, ElfVersionNeeds.MarkWeak(patched, new HashSet<string> { "GLIBCXX_3.4.32" }));
        var target = ElfVersionNeeds.Read(patched).Single(n => n.Version == "GLIBCXX_3.4.32");
        Assert.Equal(ElfVersionNeeds.VerFlagWeak, target.Flags);
        // vna_flags is a little-endian 16-bit field: exactly its low byte changes, from 0 to 2.
        var diff = Enumerable.Range(0, original.Length).Where(i => original[i] != patched[i]).ToArray();
        Assert.Equal(new[] { (int)target.FlagsOffset }, diff);
        Assert.Equal(2, patched[target.FlagsOffset]);
        // Idempotent: a second pass finds nothing left to change.
        Assert.Equal(0, ElfVersionNeeds.MarkWeak(patched, new HashSet<string> { "GLIBCXX_3.4.32" }));
    }

    [Fact]
    public void RejectsAFileThatIsNotElf() =>
        Assert.Throws<InvalidDataException>(() => ElfVersionNeeds.Read(new byte[64]));
}
