package input

import (
	"bytes"
)

// rawDoc is one YAML document of a multi-document stream.
type rawDoc struct {
	data []byte
	// line is the 1-based line of the document's first line in its file.
	line int
}

// splitDocuments splits a YAML stream on "---" separator lines, the way
// Kubernetes' YAML reader does, so that a syntax error in one document does
// not hide the documents after it.
func splitDocuments(data []byte) []rawDoc {
	var docs []rawDoc
	start, startLine, line := 0, 1, 1
	for i := 0; i < len(data); {
		end := bytes.IndexByte(data[i:], '\n')
		next := len(data)
		if end >= 0 {
			next = i + end + 1
		}
		l := data[i:next]
		if isSeparator(l) {
			docs = append(docs, rawDoc{data: data[start:i], line: startLine})
			start, startLine = next, line+1
		}
		i = next
		line++
	}
	docs = append(docs, rawDoc{data: data[start:], line: startLine})
	return docs
}

func isSeparator(l []byte) bool {
	if !bytes.HasPrefix(l, []byte("---")) {
		return false
	}
	// "--- # comment" is a separator too.
	rest := bytes.TrimSpace(l[3:])
	return len(rest) == 0 || rest[0] == '#'
}
