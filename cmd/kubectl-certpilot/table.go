package main

import (
	"io"
	"strings"
	"unicode/utf8"
)

// ANSI colours of the days-left column, as the old `certificate ls` used them.
const (
	ansiRed          = "\x1b[31m"
	ansiGreen        = "\x1b[32m"
	ansiYellow       = "\x1b[33m"
	ansiBrightYellow = "\x1b[93m"
	ansiReset        = "\x1b[0m"
)

// cell is one table cell: its text and an optional ANSI colour.
type cell struct {
	text  string
	color string
}

// writeTable writes rows as columns separated by three spaces, padded to the widest cell. The
// padding is computed on the text alone, so colour codes never shift the columns (which
// text/tabwriter, counting bytes, would do).
func writeTable(w io.Writer, header []string, rows [][]cell, colored bool) error {
	widths := make([]int, len(header))
	for i, title := range header {
		widths[i] = utf8.RuneCountInString(title)
	}
	for _, row := range rows {
		for i, c := range row {
			widths[i] = max(widths[i], utf8.RuneCountInString(c.text))
		}
	}
	var out strings.Builder
	line := func(cells []cell) {
		var b strings.Builder
		for i, c := range cells {
			text := c.text
			if i < len(cells)-1 {
				text += strings.Repeat(" ", widths[i]-utf8.RuneCountInString(c.text)+3)
			}
			if colored && c.color != "" {
				// Colour the text, not the padding.
				text = c.color + c.text + ansiReset + text[len(c.text):]
			}
			b.WriteString(text)
		}
		out.WriteString(strings.TrimRight(b.String(), " ") + "\n")
	}
	headerCells := make([]cell, len(header))
	for i, title := range header {
		headerCells[i] = cell{text: title}
	}
	line(headerCells)
	for _, row := range rows {
		line(row)
	}
	_, err := io.WriteString(w, out.String())
	return err
}
