package check

import (
	"encoding/xml"
	"fmt"
	"io"
	"strings"
)

type junitSuites struct {
	XMLName  xml.Name     `xml:"testsuites"`
	Tests    int          `xml:"tests,attr"`
	Failures int          `xml:"failures,attr"`
	Skipped  int          `xml:"skipped,attr"`
	Time     string       `xml:"time,attr"`
	Suites   []junitSuite `xml:"testsuite"`
}

type junitSuite struct {
	Name     string      `xml:"name,attr"`
	Tests    int         `xml:"tests,attr"`
	Failures int         `xml:"failures,attr"`
	Skipped  int         `xml:"skipped,attr"`
	Time     string      `xml:"time,attr"`
	Cases    []junitCase `xml:"testcase"`
}

type junitCase struct {
	Name      string        `xml:"name,attr"`
	Classname string        `xml:"classname,attr"`
	Time      string        `xml:"time,attr"`
	Failure   *junitMessage `xml:"failure,omitempty"`
	Skipped   *junitMessage `xml:"skipped,omitempty"`
}

type junitMessage struct {
	Message string `xml:"message,attr"`
	Body    string `xml:",chardata"`
}

// WriteJUnit writes the report as JUnit XML: one test case per test.
func WriteJUnit(w io.Writer, r *Report) error {
	s := junitSuite{Name: "nodemesh check", Time: seconds(r.Duration.Seconds())}
	for _, t := range r.Tests {
		c := junitCase{Name: t.Name, Classname: "nodemesh-check", Time: seconds(t.Duration.Seconds())}
		switch t.Outcome {
		case Skipped:
			c.Skipped = &junitMessage{Message: t.Reason}
			s.Skipped++
		case Failed:
			var body strings.Builder
			msg := t.Reason
			for _, a := range t.Actions {
				if a.Outcome == Failed {
					if msg == "" {
						msg = a.Scenario + "/" + a.Action + ": " + a.Detail
					}
					fmt.Fprintf(&body, "%s/%s: %s\n  from %s/%s: %s\n  stdout: %s\n  stderr: %s\n", a.Scenario, a.Action, a.Detail,
						a.From.Namespace, a.From.Name, shellQuote(a.Command), strings.TrimSpace(a.Result.Stdout), strings.TrimSpace(a.Result.Stderr))
				}
			}
			c.Failure = &junitMessage{Message: msg, Body: body.String()}
			s.Failures++
		}
		s.Tests++
		s.Cases = append(s.Cases, c)
	}
	doc := junitSuites{Tests: s.Tests, Failures: s.Failures, Skipped: s.Skipped, Time: s.Time, Suites: []junitSuite{s}}
	if _, err := io.WriteString(w, xml.Header); err != nil {
		return err
	}
	enc := xml.NewEncoder(w)
	enc.Indent("", "  ")
	if err := enc.Encode(doc); err != nil {
		return err
	}
	_, err := io.WriteString(w, "\n")
	return err
}

func seconds(s float64) string { return fmt.Sprintf("%.3f", s) }
