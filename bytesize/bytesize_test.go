package bytesize

import "testing"

func TestFormat(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", -1023: "-1023 B", 1024: "1.00 KiB", 1536: "1.50 KiB",
		10 << 20: "10.0 MiB", 150 << 20: "150 MiB", 19_700_000_000: "18.3 GiB", -(3 << 30): "-3.00 GiB",
		1 << 40: "1.00 TiB", 1 << 50: "1.00 PiB", 4096 << 50: "4096 PiB",
	} {
		if got := Format(n); got != want {
			t.Errorf("Format(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestFormatTenths(t *testing.T) {
	for n, want := range map[int64]string{
		0: "0 B", 1023: "1023 B", 1024: "1.0 KiB", 8 << 20: "8.0 MiB", (1 << 20) - 100: "1023.9 KiB",
		1_610_612_736: "1.5 GiB", 3 << 50: "3.0 PiB", 2048 << 50: "2048.0 PiB",
	} {
		if got := FormatTenths(n); got != want {
			t.Errorf("FormatTenths(%d) = %q, want %q", n, got, want)
		}
	}
}
