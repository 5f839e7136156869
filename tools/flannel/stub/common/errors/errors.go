// Package errors is the stand-in for the SDK's error type.
package errors

// TencentCloudSDKError is an SDK error.
type TencentCloudSDKError struct {
	Code, Message, RequestId string
}

func (e *TencentCloudSDKError) Error() string { return e.Code + ": " + e.Message }
