using Harness.Cli.Output;

namespace Harness.Tests;

/// <summary>The bundle's font (scripts/gpu/bundle.sh copies Debian's DejaVu Sans beside the binary) becomes the plots' font;
/// without one the default stays the system's.</summary>
public class PlotFontsTests
{
    private const string DejaVu = "/usr/share/fonts/truetype/dejavu";

    [Fact]
    public void AFontFolderBesideTheBinaryIsEveryPlotsFont()
    {
        string before = ScottPlot.Fonts.Default;
        string dir = Path.Combine(TestTemp.Root, "fonts-" + Guid.NewGuid().ToString("N"));
        Directory.CreateDirectory(dir);
        try
        {
            Assert.False(PlotFonts.UseFrom(dir));
            Assert.Equal(before, ScottPlot.Fonts.Default);
            File.Copy(Path.Combine(DejaVu, "DejaVuSans.ttf"), Path.Combine(dir, "DejaVuSans.ttf"));
            File.Copy(Path.Combine(DejaVu, "DejaVuSans-Bold.ttf"), Path.Combine(dir, "DejaVuSans-Bold.ttf"));
            Assert.True(PlotFonts.UseFrom(dir));
            Assert.Equal("Harness Sans", ScottPlot.Fonts.Default);
            // A plot with text renders with it.
            var plot = new ScottPlot.Plot();
            plot.Add.Scatter(new double[] { 1, 2, 3 }, new double[] { 3, 1, 2 });
            plot.Title("loss");
            plot.XLabel("iteration");
            string png = Path.Combine(dir, "plot.png");
            plot.SavePng(png, 400, 300);
            Assert.True(new FileInfo(png).Length > 1000);
        }
        finally
        {
            ScottPlot.Fonts.Default = before;
            Directory.Delete(dir, recursive: true);
        }
    }
}
