//! Sweep results as CSV rows and an SVG chart (plotters): throughput and median latency
//! against I/O size, one line per server/transport label, operation and depth.

use std::collections::BTreeMap;
use std::path::Path;

use plotters::prelude::*;

/// One point of a sweep.
#[derive(Debug, Clone, PartialEq)]
pub struct Row {
    pub label: String,
    pub transport: String,
    pub op: String,
    pub pattern: String,
    pub size: u64,
    pub depth: usize,
    pub channels: usize,
    pub mb_per_s: f64,
    pub iops: f64,
    pub p50_us: f64,
    pub p99_us: f64,
    pub p999_us: f64,
    pub client_cpu_s_per_gib: f64,
    pub server_cpu_s_per_gib: Option<f64>,
}

pub const CSV_HEADER: &str = "label,transport,op,pattern,size,depth,channels,mb_per_s,iops,p50_us,p99_us,p999_us,client_cpu_s_per_gib,server_cpu_s_per_gib";

impl Row {
    pub fn to_csv(&self) -> String {
        format!(
            "{},{},{},{},{},{},{},{:.1},{:.0},{:.0},{:.0},{:.0},{:.3},{}",
            self.label.replace(',', ";"),
            self.transport,
            self.op,
            self.pattern,
            self.size,
            self.depth,
            self.channels,
            self.mb_per_s,
            self.iops,
            self.p50_us,
            self.p99_us,
            self.p999_us,
            self.client_cpu_s_per_gib,
            self.server_cpu_s_per_gib.map_or(String::new(), |v| format!("{v:.3}"))
        )
    }

    /// Parses one CSV line as written by [`Row::to_csv`].
    pub fn from_csv(line: &str) -> Result<Row, String> {
        let f: Vec<&str> = line.trim().split(',').collect();
        if f.len() != 14 {
            return Err(format!("expected 14 fields, got {}: {line}", f.len()));
        }
        let num = |i: usize| f[i].parse::<f64>().map_err(|_| format!("field {} is not a number: {line}", i + 1));
        let int = |i: usize| f[i].parse::<u64>().map_err(|_| format!("field {} is not an integer: {line}", i + 1));
        Ok(Row {
            label: f[0].to_string(),
            transport: f[1].to_string(),
            op: f[2].to_string(),
            pattern: f[3].to_string(),
            size: int(4)?,
            depth: int(5)? as usize,
            channels: int(6)? as usize,
            mb_per_s: num(7)?,
            iops: num(8)?,
            p50_us: num(9)?,
            p99_us: num(10)?,
            p999_us: num(11)?,
            client_cpu_s_per_gib: num(12)?,
            server_cpu_s_per_gib: if f[13].is_empty() { None } else { Some(num(13)?) },
        })
    }
}

/// Reads the rows of a CSV file (the header line is skipped).
pub fn read_csv(path: &Path) -> Result<Vec<Row>, String> {
    let text = std::fs::read_to_string(path).map_err(|e| format!("{}: {e}", path.display()))?;
    text.lines().filter(|l| !l.trim().is_empty() && !l.starts_with("label,")).map(Row::from_csv).collect()
}

pub fn fmt_size(v: u64) -> String {
    if v >= 1 << 20 && v % (1 << 20) == 0 {
        format!("{}M", v >> 20)
    } else if v >= 1 << 10 && v % (1 << 10) == 0 {
        format!("{}K", v >> 10)
    } else {
        v.to_string()
    }
}

/// Writes the chart: MB/s (top) and p50 latency (bottom, log scale) against I/O size.
/// Rows with a p50 of 0 (not measured) appear in the throughput half only.
pub fn svg(rows: &[Row], title: &str, out: &Path) -> Result<(), String> {
    if rows.is_empty() {
        return Err("no rows to chart".into());
    }
    let mut series: BTreeMap<String, Vec<&Row>> = BTreeMap::new();
    for r in rows {
        series.entry(format!("{} {} {} d{} x{}", r.label, r.transport, r.op, r.depth, r.channels)).or_default().push(r);
    }
    for v in series.values_mut() {
        v.sort_by_key(|r| r.size);
    }
    let min_size = rows.iter().map(|r| r.size).min().unwrap_or(4096).max(1);
    let max_size = rows.iter().map(|r| r.size).max().unwrap_or(1 << 20).max(min_size * 2);
    let max_mb = rows.iter().map(|r| r.mb_per_s).fold(1.0, f64::max) * 1.1;
    let min_lat = rows.iter().map(|r| r.p50_us).filter(|v| *v > 0.0).fold(f64::MAX, f64::min).clamp(1.0, 1e6) * 0.8;
    let max_lat = rows.iter().map(|r| r.p50_us).fold(1.0, f64::max).max(min_lat * 2.0) * 1.3;
    let e = |x: &dyn std::fmt::Display| x.to_string();
    let root = SVGBackend::new(out, (1000, 900)).into_drawing_area();
    root.fill(&WHITE).map_err(|x| e(&x))?;
    let root = root.titled(title, ("sans-serif", 22)).map_err(|x| e(&x))?;
    let (top, bottom) = root.split_vertically(440);
    let size_fmt = |v: &u64| fmt_size(*v);

    let mut c = ChartBuilder::on(&top)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((min_size..max_size).log_scale(), 0f64..max_mb)
        .map_err(|x| e(&x))?;
    c.configure_mesh().x_desc("I/O size").y_desc("MB/s").x_label_formatter(&size_fmt).draw().map_err(|x| e(&x))?;
    for (i, (name, pts)) in series.iter().enumerate() {
        let col = Palette99::pick(i).to_rgba();
        c.draw_series(LineSeries::new(pts.iter().map(|r| (r.size, r.mb_per_s)), col.stroke_width(2)))
            .map_err(|x| e(&x))?
            .label(name.clone())
            .legend(move |(x, y)| PathElement::new(vec![(x, y), (x + 20, y)], col.stroke_width(2)));
        c.draw_series(pts.iter().map(|r| Circle::new((r.size, r.mb_per_s), 3, col.filled()))).map_err(|x| e(&x))?;
    }
    c.configure_series_labels().position(SeriesLabelPosition::UpperLeft).background_style(WHITE.mix(0.85)).border_style(BLACK).draw().map_err(|x| e(&x))?;

    let mut c = ChartBuilder::on(&bottom)
        .margin(15)
        .x_label_area_size(35)
        .y_label_area_size(60)
        .build_cartesian_2d((min_size..max_size).log_scale(), (min_lat..max_lat).log_scale())
        .map_err(|x| e(&x))?;
    c.configure_mesh().x_desc("I/O size").y_desc("p50 latency (us)").x_label_formatter(&size_fmt).draw().map_err(|x| e(&x))?;
    for (i, (_, pts)) in series.iter().enumerate() {
        let col = Palette99::pick(i).to_rgba();
        // A latency of 0 means "not measured" (perftest rows): no point, no line.
        let lat: Vec<&&Row> = pts.iter().filter(|r| r.p50_us > 0.0).collect();
        c.draw_series(LineSeries::new(lat.iter().map(|r| (r.size, r.p50_us.max(min_lat))), col.stroke_width(2))).map_err(|x| e(&x))?;
        c.draw_series(lat.iter().map(|r| Circle::new((r.size, r.p50_us.max(min_lat)), 3, col.filled()))).map_err(|x| e(&x))?;
    }
    root.present().map_err(|x| e(&x))?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn row(label: &str, size: u64, mb: f64) -> Row {
        Row { label: label.into(), transport: "tcp".into(), op: "read".into(), pattern: "seq".into(), size, depth: 8, channels: 1,
              mb_per_s: mb, iops: mb * 1e6 / size as f64, p50_us: 100.0, p99_us: 200.0, p999_us: 300.0,
              client_cpu_s_per_gib: 0.5, server_cpu_s_per_gib: None }
    }

    #[test]
    fn csv_round_trip_and_chart() {
        let rows = vec![row("ours", 4096, 100.0), row("ours", 1 << 20, 2000.0), row("samba", 4096, 80.0), row("samba", 1 << 20, 1500.0)];
        for r in &rows {
            assert_eq!(Row::from_csv(&r.to_csv()).unwrap(), Row { mb_per_s: (r.mb_per_s * 10.0).round() / 10.0, iops: r.iops.round(), ..r.clone() });
        }
        assert!(Row::from_csv("a,b").is_err());
        let dir = std::env::temp_dir().join(format!("chart-test-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let out = dir.join("c.svg");
        svg(&rows, "test", &out).unwrap();
        let s = std::fs::read_to_string(&out).unwrap();
        assert!(s.starts_with("<svg") && s.contains("ours tcp read d8 x1") && s.contains("samba tcp read d8 x1"));
        // perftest rows: no latency measured (p50 0): charted in the throughput half only.
        let mut more = rows.clone();
        more.push(Row { p50_us: 0.0, ..row("perftest", 4096, 50.0) });
        more.push(Row { p50_us: 0.0, ..row("perftest", 1 << 20, 3000.0) });
        svg(&more, "test", &out).unwrap();
        assert!(std::fs::read_to_string(&out).unwrap().contains("perftest tcp read d8 x1"));
        std::fs::remove_dir_all(&dir).unwrap();
        assert_eq!(fmt_size(65536), "64K");
        assert_eq!(fmt_size(8 << 20), "8M");
    }
}
