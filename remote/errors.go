package remote

import (
	"errors"
	"fmt"
	"net/http"

	"github.com/aws/aws-sdk-go-v2/aws/retry"
	"github.com/aws/smithy-go"
	smithyhttp "github.com/aws/smithy-go/transport/http"
)

// What can go wrong with a remote, each a sentinel that errors.Is finds in the wrapped error the
// package returns (whose message says the details), so that the server can pick its HTTP status.
var (
	ErrUnreachable = errors.New("the S3 endpoint cannot be reached")
	ErrCredentials = errors.New("the S3 endpoint refused the credentials")
	ErrNoBucket    = errors.New("the bucket does not exist")
	ErrNotFound    = errors.New("the remote has no such context")
	ErrCorrupt     = errors.New("the remote's copy is damaged")
	ErrOtherModel  = errors.New("the context belongs to another model")
)

// explain turns an S3 client error into one of the sentinels with what the user can do about it.
// doing says what was being done ("upload context \"x\""); name is the context, for "not found".
func (r *Remote) explain(doing, name string, err error) error {
	if err == nil {
		return nil
	}
	var apiErr smithy.APIError
	if errors.As(err, &apiErr) {
		switch apiErr.ErrorCode() {
		case "InvalidAccessKeyId", "SignatureDoesNotMatch", "AccessDenied", "InvalidToken", "ExpiredToken",
			"InvalidSecurity", "AuthorizationHeaderMalformed", "Forbidden":
			return fmt.Errorf("%s: %w (%s: %s): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile in the shared credentials file",
				doing, ErrCredentials, apiErr.ErrorCode(), apiErr.ErrorMessage())
		case "NoSuchBucket":
			return kindError{ErrNoBucket, fmt.Sprintf("%s: no bucket %q at %s (create it, or fix --remote)", doing, r.bucket, r.endpoint)}
		case "NoSuchKey", "NotFound":
			return r.notFound(doing, name)
		}
	}
	var respErr *smithyhttp.ResponseError
	if errors.As(err, &respErr) {
		switch respErr.HTTPStatusCode() {
		case http.StatusForbidden, http.StatusUnauthorized:
			return fmt.Errorf("%s: %w (HTTP %d): check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, or the profile in the shared credentials file",
				doing, ErrCredentials, respErr.HTTPStatusCode())
		case http.StatusNotFound:
			return r.notFound(doing, name)
		}
	}
	var sendErr *smithyhttp.RequestSendError
	var attemptsErr *retry.MaxAttemptsError
	if errors.As(err, &sendErr) || (errors.As(err, &attemptsErr) && !errors.As(err, &apiErr)) {
		return fmt.Errorf("%s: %w: %s: %v", doing, ErrUnreachable, r.endpoint, err)
	}
	return fmt.Errorf("%s: %w", doing, err)
}

func (r *Remote) notFound(doing, name string) error {
	return kindError{ErrNotFound, fmt.Sprintf("%s: %s has no context %q", doing, r, name)}
}

// kindError is an error of one of the kinds above whose message says it in its own words.
type kindError struct {
	kind error
	msg  string
}

func (e kindError) Error() string { return e.msg }
func (e kindError) Unwrap() error { return e.kind }
