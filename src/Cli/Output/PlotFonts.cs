namespace Harness.Cli.Output;

/// <summary>
/// The plots' font where the machine has none: ScottPlot draws its text with a system font through SkiaSharp, and a machine
/// without fonts (the lent GPU machines: every plot they made had no tick labels, axis titles or legend) gets plots without
/// text. A harness built by scripts/gpu/bundle.sh carries a font in <see cref="Folder"/> beside the binary; when that folder
/// holds one, it is every plot's font. Without it (a build from source) the system's fonts serve as before.
/// </summary>
public static class PlotFonts
{
    /// <summary>The folder beside the binary the bundle puts its font files in.</summary>
    public const string Folder = "fonts";

    private const string Family = "Harness Sans";

    /// <summary>Makes the bundled font (a regular face, and a bold one whose file name says Bold) the plots' default.</summary>
    public static void UseBundled() => UseFrom(Path.Combine(AppContext.BaseDirectory, Folder));

    /// <summary>As <see cref="UseBundled"/>, from <paramref name="directory"/>; returns whether a font was found there.</summary>
    public static bool UseFrom(string directory)
    {
        if (!Directory.Exists(directory)) return false;
        var files = Directory.GetFiles(directory, "*.ttf").Order().ToList();
        var regular = files.FirstOrDefault(f => !Path.GetFileName(f).Contains("Bold", StringComparison.OrdinalIgnoreCase));
        if (regular is null) return false;
        ScottPlot.Fonts.AddFontFile(Family, regular);
        if (files.FirstOrDefault(f => Path.GetFileName(f).Contains("Bold", StringComparison.OrdinalIgnoreCase)) is { } bold)
            ScottPlot.Fonts.AddFontFile(Family, bold, bold: true);
        ScottPlot.Fonts.Default = Family;
        return true;
    }
}
